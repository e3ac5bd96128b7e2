//! Shared by the ibench process tests.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::Child;

/// Reads an `ibench server`'s banner ("ibench server: listening on A[,B]
/// (icx node N, backend B[, 2 links]), baseline UDP on C") from its
/// stdout; returns the line and the addresses it listens on (A or A,B).
pub fn banner(child: &mut Child) -> (String, String) {
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().expect("piped stdout"))
        .read_line(&mut line)
        .expect("server banner");
    let addr = line
        .split("listening on ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("server banner: {line}"))
        .to_string();
    (line, addr)
}
