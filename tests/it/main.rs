//! Integration tests: real TLS on loopback, real spool and site database in temporary
//! directories, real child processes where the test is about a process.

mod db;
mod helpers;
mod load;
mod procs;

mod admins;
mod bench;
mod bench_e2e;
mod bench_site;
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
mod lists;
mod metrics;
mod outage;
mod report_format;
mod retention;
mod retention_current;
mod scrape;
mod secrets;
mod service;
mod site_events;
mod store;
mod terms;
mod terms_per_user;
mod test_command;
mod verify;
