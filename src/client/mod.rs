//! The client toolkit of sidecache's own commands (`bench`, `warm`, `purge`): one
//! keep-alive HTTP/1.1 [`Connection`] with typed [`ClientError`]s, the [`HttpUrl`] they are
//! pointed at, one bounded worker [`pool`] that spreads many requests over a few
//! connections, and how a command runs and ends ([`block_on`], [`CommandStatus`]).

mod command;
mod connection;
mod error;
pub mod pool;
mod url;

pub use command::{block_on, CommandStatus};
pub use connection::{Connection, GetResponse, PostResponse, MAX_KEPT_BODY};
pub use error::{ClientError, InvalidHeader, InvalidUrl};
pub use url::{header_map, HttpUrl};
