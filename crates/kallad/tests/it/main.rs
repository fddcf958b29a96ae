//! kallad as a real process: `kallad run` and `kallad scheduler` over real HTTP.

mod callbacks;
mod cluster;
mod daemon;
mod postgres;
mod run_cmd;
mod scenarios;
