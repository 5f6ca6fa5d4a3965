//! Listening sockets: addresses, bind + backlog + the somaxconn check, permissions, client filter,
//! and sockets passed by systemd socket activation ([`systemd`]).

pub mod address;
pub mod clients;
pub mod error;
pub mod socket;
pub mod somaxconn;
pub mod stream;
pub mod systemd;
pub mod unix_path;

pub use address::{AddressError, ListenAddress};
pub use clients::ClientFilter;
pub use error::ListenError;
pub use socket::{bind, relisten, BindOptions, Listener};
pub use somaxconn::{clamp_warning, effective_backlog, read_somaxconn};
pub use stream::{Peer, Stream};
