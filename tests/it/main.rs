//! Integration tests: real TLS on loopback, real spool and site database in temporary
//! directories, real child processes where the test is about a process.

mod db;
mod helpers;
mod load;
mod procs;

mod bench;
mod browser;
mod cli;
mod collections;
mod compliance;
mod compliance_cli;
mod console;
mod crash;
mod edges;
mod error_table;
mod hostile;
mod hostile_conn;
mod intake;
mod keys;
mod metrics;
mod outage;
mod retention;
mod secrets;
mod service;
mod store;
mod terms;
mod test_command;
