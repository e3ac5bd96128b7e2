//! Free ports on 127.0.0.1 for tests that start servers in other
//! processes: the port of a socket bound to port 0, then closed (another
//! process may take it meanwhile; rare, and the test then fails loudly).

/// A TCP port free on 127.0.0.1 a moment ago.
pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a TCP socket on 127.0.0.1")
}

/// A UDP port free on 127.0.0.1 a moment ago.
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("bind a UDP socket on 127.0.0.1")
}

#[cfg(test)]
mod tests {
    #[test]
    fn ports_are_bindable() {
        let t = super::free_tcp_port();
        let u = super::free_udp_port();
        assert!(t > 0 && u > 0);
        assert!(std::net::UdpSocket::bind(("127.0.0.1", u)).is_ok());
    }
}
