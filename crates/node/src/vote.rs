//! Voting-file I/O on real storage (being written).
