//! HTTPS plumbing shared by every role: the server loop with its limits ([`server`]) and a small
//! kept-alive client ([`client`]).

pub mod client;
pub mod server;

pub use client::{ClientError, ClientResponse, HttpClient, HttpVersion};
pub use server::{Handler, Limits, Peer, ServerHandle};
