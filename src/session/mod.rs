//! Session layer below TLS: explicit-proxy preludes (HTTP CONNECT, SOCKS4/5) and the PROXY
//! protocol header of a load balancer, which precede TLS inside the same TCP connection.

pub mod connect;
pub mod proxy_protocol;
pub mod socks;
