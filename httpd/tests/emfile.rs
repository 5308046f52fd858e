//! Accept errors: with the process out of descriptors the port pauses accepting, says so, and serves
//! again once descriptors are back. Alone in its test binary, since it lowers the process's fd limit and
//! exhausts it.

mod common;

use common::*;
use std::io::Write;
use std::time::{Duration, Instant};

#[test]
fn running_out_of_descriptors_pauses_accepting_until_they_come_back() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let (server, _) = start(config());
    let hard = getrlimit(Resource::Nofile).maximum;
    setrlimit(Resource::Nofile, Rlimit { current: Some(256), maximum: hard }).unwrap();
    let mut hoard = Vec::new();
    while let Ok(file) = std::fs::File::open("/dev/null") {
        hoard.push(file);
    }
    // One descriptor for the client; the server's accept then fails with EMFILE.
    hoard.pop();
    let mut client = std::net::TcpStream::connect(server.addr()).unwrap();
    client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let paused = Instant::now();
    while server.accepting() && paused.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(!server.accepting(), "the port says it cannot accept");
    std::thread::sleep(Duration::from_millis(300));
    drop(hoard);
    client.write_all(b"GET /back HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").unwrap();
    let raw = read_all(&mut client);
    assert_eq!((status(&raw), body(&raw)), (200, "GET /back"));
    assert!(server.accepting());
    assert_eq!(status(&exchange(server.addr(), b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")), 200);
}
