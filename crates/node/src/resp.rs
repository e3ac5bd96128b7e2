//! The RESP server (being written).
