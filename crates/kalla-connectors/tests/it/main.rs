//! Integration tests of the connectors against real servers.

mod postgres;
