//! The parameters of `command`: the program, its arguments, what is observed and for how long
//! it may run.

use std::path::PathBuf;
use std::time::Duration;

use super::{DEFAULT_COMMAND_TIMEOUT, DefinitionError, Params, check_abs_path};

/// Longest timeout a definition may ask for.
const MAX_TIMEOUT_S: u64 = 300;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Stdout,
    ExitStatus,
}

/// A checked `command` evaluator.
#[derive(Debug, Clone)]
pub struct Spec {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub output: Output,
    pub timeout: Duration,
}

impl Spec {
    pub(crate) fn parse(p: &mut Params<'_>, args: &[String]) -> Result<Self, DefinitionError> {
        let program = p.required("program")?;
        check_abs_path(program).map_err(|m| p.bad("program", m))?;
        let output = match p.optional("output") {
            None | Some("stdout") => Output::Stdout,
            Some("exit_status") => Output::ExitStatus,
            Some(o) => {
                return Err(p.bad("output", format!("{o:?} is not stdout or exit_status")));
            }
        };
        let timeout = match p.optional("timeout_s") {
            None => DEFAULT_COMMAND_TIMEOUT,
            Some(t) => match t.parse::<u64>() {
                Ok(s) if (1..=MAX_TIMEOUT_S).contains(&s) => Duration::from_secs(s),
                _ => {
                    return Err(p.bad(
                        "timeout_s",
                        format!("{t:?} is not a number of seconds from 1 to {MAX_TIMEOUT_S}"),
                    ));
                }
            },
        };
        if args.iter().any(|a| a.contains('\0')) {
            return Err(p.bad("args", "an argument holds a NUL byte"));
        }
        Ok(Self {
            program: PathBuf::from(program),
            args: args.to_vec(),
            output,
            timeout,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::Check;
    use super::super::tests::setting;

    #[test]
    fn bad_definitions() {
        for (params, param) in [
            (vec![("program", "ls")], "program"),
            (
                vec![("program", "/bin/ls"), ("timeout_s", "0")],
                "timeout_s",
            ),
            (vec![("program", "/bin/ls"), ("output", "stderr")], "output"),
        ] {
            let e = Check::parse(&setting("command", &params, "equals", "x")).unwrap_err();
            assert_eq!(e.param(), Some(param), "{e}");
        }
    }
}
