//! Commands that run beside the daemon rather than inside it: `doctor`,
//! `bench`, the store-wear benchmark and the client for the running daemon's
//! local API (`spotter export` while it runs).

pub(crate) mod bench;
pub(crate) mod doctor;
pub mod localapi;
pub mod wear;
