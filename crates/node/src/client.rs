//! A small blocking RESP client, for `fusion-node local`'s workload and
//! report and for tests: one request at a time, or a pipeline.

use crate::resp::Reply;
use redis_protocol::resp2::{decode::decode, types::OwnedFrame};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Replies larger than this are refused (a node never sends one).
const MAX_REPLY: usize = 64 << 20;

#[derive(Debug)]
pub struct Client {
    sock: TcpStream,
    buf: Vec<u8>,
}

fn frame(f: OwnedFrame) -> Reply {
    match f {
        OwnedFrame::SimpleString(s) => Reply::Simple(String::from_utf8_lossy(&s).into_owned()),
        OwnedFrame::Error(e) => Reply::Error(e),
        OwnedFrame::Integer(i) => Reply::Integer(i),
        OwnedFrame::BulkString(b) => Reply::Bulk(b),
        OwnedFrame::Array(a) => Reply::Array(a.into_iter().map(frame).collect()),
        OwnedFrame::Null => Reply::Null,
    }
}

/// A request as a RESP array of bulk strings.
pub fn encode_request(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

impl Client {
    /// Connects, with `timeout` on the connect and on every read and write.
    pub fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<Client> {
        let sock = TcpStream::connect_timeout(&addr, timeout)?;
        sock.set_read_timeout(Some(timeout))?;
        sock.set_write_timeout(Some(timeout))?;
        sock.set_nodelay(true)?;
        Ok(Client {
            sock,
            buf: Vec::new(),
        })
    }

    /// One command, its reply.
    pub fn call(&mut self, args: &[&[u8]]) -> io::Result<Reply> {
        let mut out = Vec::new();
        encode_request(&mut out, args);
        self.sock.write_all(&out)?;
        self.read_reply()
    }

    /// `call` with string arguments.
    pub fn cmd(&mut self, args: &[&str]) -> io::Result<Reply> {
        let a: Vec<&[u8]> = args.iter().map(|s| s.as_bytes()).collect();
        self.call(&a)
    }

    /// Several commands written at once, their replies in order.
    pub fn pipeline(&mut self, cmds: &[Vec<Vec<u8>>]) -> io::Result<Vec<Reply>> {
        let mut out = Vec::new();
        for c in cmds {
            let a: Vec<&[u8]> = c.iter().map(Vec::as_slice).collect();
            encode_request(&mut out, &a);
        }
        self.sock.write_all(&out)?;
        (0..cmds.len()).map(|_| self.read_reply()).collect()
    }

    fn read_reply(&mut self) -> io::Result<Reply> {
        loop {
            match decode(&self.buf) {
                Ok(Some((f, used))) => {
                    self.buf.drain(..used);
                    return Ok(frame(f));
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("bad reply: {e:?}"),
                    ))
                }
            }
            if self.buf.len() > MAX_REPLY {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "reply too large",
                ));
            }
            let mut chunk = [0u8; 16 << 10];
            let n = self.sock.read(&mut chunk)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the node closed the connection",
                ));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// `INFO` text as `name -> value`.
pub fn info_fields(text: &str) -> std::collections::BTreeMap<String, String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}
