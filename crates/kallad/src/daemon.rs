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

/// The scheduler's advertised host. As [`advertised_host`], except that binding every address
/// without `--external-host` is not refused (SPEC 2's own recipe is `--bind-host 0.0.0.0
/// --api-token T`): a scheduler that never hands work to executors (`local`) advertises
/// 127.0.0.1, any other advertises the machine's host name (`hostname`), and the second value
/// says what to warn about.
pub(crate) fn scheduler_advertised_host(
    external_host: Option<&str>,
    bind_host: &str,
    uses_executors: bool,
    hostname: Option<String>,
) -> (String, Option<String>) {
    match advertised_host(external_host, bind_host) {
        Ok(h) => (h, None),
        Err(_) if !uses_executors => ("127.0.0.1".to_string(), None),
        Err(_) => {
            let host = hostname.filter(|h| !h.trim().is_empty()).map(|h| h.trim().to_string());
            let host = host.unwrap_or_else(|| "127.0.0.1".to_string());
            let warning = format!(
                "binding {bind_host} without --external-host: executors are told to reach this scheduler at \
                 {host}; set --external-host to the address they can reach"
            );
            (host, Some(warning))
        }
    }
}

/// This machine's host name, if the kernel says.
pub(crate) fn machine_hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname").ok()
}

#[cfg(test)]
mod tests {
    use super::{advertised_host, scheduler_advertised_host};

    /// `--bind-host 0.0.0.0` alone starts the scheduler: executors never used in local mode,
    /// and told the host name otherwise, with a warning.
    #[test]
    fn a_scheduler_binding_every_address_advertises_what_it_can() {
        let host = |external, bind, executors, name: Option<&str>| {
            scheduler_advertised_host(external, bind, executors, name.map(str::to_string))
        };
        assert_eq!(host(Some("10.0.0.5"), "0.0.0.0", true, Some("vm")), ("10.0.0.5".to_string(), None));
        assert_eq!(host(None, "127.0.0.1", true, Some("vm")), ("127.0.0.1".to_string(), None));
        assert_eq!(host(None, "0.0.0.0", false, Some("vm")), ("127.0.0.1".to_string(), None));
        let (h, warning) = host(None, "0.0.0.0", true, Some("vm\n"));
        assert_eq!(h, "vm");
        assert!(warning.unwrap().contains("set --external-host"));
        assert_eq!(host(None, "::", true, None).0, "127.0.0.1");
    }

    #[test]
    fn the_advertised_host_is_the_external_one_else_a_dialable_bind_host() {
        assert_eq!(advertised_host(Some("10.0.0.5"), "0.0.0.0").unwrap(), "10.0.0.5");
        assert_eq!(advertised_host(None, "127.0.0.1").unwrap(), "127.0.0.1");
        assert_eq!(advertised_host(None, "0.0.0.0").unwrap_err(), "--external-host is required when binding 0.0.0.0");
        assert!(advertised_host(None, "::").is_err());
    }
}
