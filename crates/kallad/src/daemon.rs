//! What the two long-running commands share as processes: how they are asked to stop, and the
//! address they tell others to reach them at.

/// Resolves when the process is asked to stop: SIGTERM or Ctrl-C.
pub(crate) async fn stop_requested() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = term => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}

/// The address advertised to peers: `--external-host`, else `--bind-host` unless that binds every
/// interface (`0.0.0.0`, `::`), which no peer can dial — then `--external-host` is required.
pub(crate) fn advertised_host(external_host: Option<&str>, bind_host: &str) -> Result<String, String> {
    match (external_host, bind_host) {
        (Some(h), _) => Ok(h.to_string()),
        (None, "0.0.0.0" | "::") => Err(format!("--external-host is required when binding {bind_host}")),
        (None, host) => Ok(host.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::advertised_host;

    #[test]
    fn the_advertised_host_is_the_external_one_else_a_dialable_bind_host() {
        assert_eq!(advertised_host(Some("10.0.0.5"), "0.0.0.0").unwrap(), "10.0.0.5");
        assert_eq!(advertised_host(None, "127.0.0.1").unwrap(), "127.0.0.1");
        assert_eq!(advertised_host(None, "0.0.0.0").unwrap_err(), "--external-host is required when binding 0.0.0.0");
        assert!(advertised_host(None, "::").is_err());
    }
}
