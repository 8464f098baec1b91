//! `command`: runs a program (no shell) and observes its trimmed standard output or its exit
//! status. The environment is cleared (PATH is a fixed system path, LC_ALL=C, so output does not
//! depend on the agent's locale), standard input is empty, output is read up to 64 KiB, and the
//! program is killed when it runs past its timeout. Under `--root` the program still runs on the
//! host: a process cannot be confined to a directory tree by the agent.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::compliance::check::command::{Output, Spec};

/// Most bytes of output read from a command.
const MAX_OUTPUT: u64 = 64 * 1024;

impl Spec {
    pub fn observe(&self) -> Result<Option<String>, String> {
        let shown = self.program.display();
        let mut child = Command::new(&self.program)
            .args(&self.args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {shown}: {e}"))?;
        let reader = |r: Option<Box<dyn Read + Send>>| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                if let Some(r) = r {
                    let _ = r.take(MAX_OUTPUT).read_to_end(&mut buf);
                }
                buf
            })
        };
        let out = reader(
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        );
        let err = reader(
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        );
        let deadline = Instant::now() + self.timeout;
        let mut pause = Duration::from_millis(1);
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!(
                        "{shown} did not finish within {} s and was killed",
                        self.timeout.as_secs()
                    ));
                }
                Ok(None) => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(20));
                }
                Err(e) => return Err(format!("waiting for {shown} failed: {e}")),
            }
        };
        let stdout = out.join().unwrap_or_default();
        let stderr = err.join().unwrap_or_default();
        match (self.output, status.code()) {
            (Output::ExitStatus, Some(code)) => Ok(Some(code.to_string())),
            (Output::Stdout, Some(0)) => {
                Ok(Some(String::from_utf8_lossy(&stdout).trim().to_string()))
            }
            (Output::Stdout, Some(code)) => {
                let why = String::from_utf8_lossy(&stderr);
                let why = why.lines().next().unwrap_or("").trim();
                Err(format!("{shown} exited with status {code}: {why}"))
            }
            (_, None) => Err(format!("{shown} was killed by a signal")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::setting;
    use super::super::*;
    use crate::compliance::State;

    fn st(r: &proto::SettingResult) -> State {
        State::from(proto::ComplianceState::try_from(r.state).unwrap())
    }

    fn command(
        program: &str,
        args: &[&str],
        extra: &[(&str, &str)],
        op: &str,
        exp: &str,
    ) -> proto::Setting {
        let mut params = vec![("program", program)];
        params.extend_from_slice(extra);
        let mut s = setting("command", &params, op, exp);
        s.evaluator.as_mut().unwrap().args = args.iter().map(|a| a.to_string()).collect();
        s
    }

    fn eval(s: &proto::Setting) -> proto::SettingResult {
        let dir = tempfile::tempdir().unwrap();
        evaluate_setting(s, Membership::Required, true, &EvalContext::new(dir.path()))
    }

    #[test]
    fn stdout_and_exit_status() {
        let r = eval(&command(
            "/bin/echo",
            &["  hello  world "],
            &[],
            "equals",
            "hello  world",
        ));
        assert_eq!(st(&r), State::Compliant, "{r:?}");
        // No shell: the argument is passed as it is.
        let r = eval(&command(
            "/bin/echo",
            &["$HOME;", "x"],
            &[],
            "equals",
            "$HOME; x",
        ));
        assert_eq!(st(&r), State::Compliant, "{r:?}");
        let r = eval(&command(
            "/bin/false",
            &[],
            &[("output", "exit_status")],
            "equals",
            "0",
        ));
        assert_eq!(r.observed_before.as_deref(), Some("1"));
        assert_eq!(st(&r), State::NonCompliant);
    }

    #[test]
    fn failures_are_errors_with_their_reason() {
        let r = eval(&command("/nonexistent/tool", &[], &[], "equals", "x"));
        assert_eq!(st(&r), State::Error);
        assert!(
            r.error.contains("cannot run /nonexistent/tool"),
            "{}",
            r.error
        );

        let r = eval(&command(
            "/bin/ls",
            &["/nonexistent-dir"],
            &[],
            "equals",
            "x",
        ));
        assert_eq!(st(&r), State::Error);
        assert!(
            r.error.contains("/bin/ls exited with status 2"),
            "{}",
            r.error
        );

        let r = eval(&command(
            "/bin/sleep",
            &["5"],
            &[("timeout_s", "1")],
            "equals",
            "x",
        ));
        assert_eq!(st(&r), State::Error);
        assert!(r.error.contains("did not finish within 1 s"), "{}", r.error);
    }
}
