//! Listening sockets: addresses, bind + backlog + the somaxconn check, permissions, client filter.

pub mod address;
pub use address::{AddressError, ListenAddress};
