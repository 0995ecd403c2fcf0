//! Session layer below TLS: explicit-proxy preludes (HTTP CONNECT, SOCKS4/5) that precede TLS
//! inside the same TCP connection.

pub mod connect;
pub mod socks;
