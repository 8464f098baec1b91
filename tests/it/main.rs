//! Integration tests: real TLS on loopback, real spool and site database in temporary
//! directories, real child processes where the test is about a process.

mod db;
mod helpers;

mod bench;
mod cli;
mod compliance;
mod compliance_cli;
mod error_table;
mod intake;
mod store;
mod terms;
