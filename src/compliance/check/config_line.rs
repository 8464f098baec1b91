//! The parameters of `config_line`: the file, the key and the dialect it is read in (what each
//! dialect means is in [`crate::agent::eval::config_line`]).

use super::{DefinitionError, Params};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Separator {
    Whitespace,
    Char(char),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Occurrence {
    First,
    Last,
}

/// A checked `config_line` evaluator.
#[derive(Debug, Clone)]
pub struct Spec {
    pub path: String,
    pub key: String,
    pub separator: Separator,
    pub occurrence: Occurrence,
    pub block_keyword: Option<String>,
    pub include_keyword: Option<String>,
    pub case_sensitive: bool,
    pub comment: String,
}

impl Spec {
    pub(crate) fn parse(p: &mut Params<'_>) -> Result<Self, DefinitionError> {
        let path = p.path("path")?;
        let separator = match p.optional("separator") {
            None | Some("whitespace") => Separator::Whitespace,
            Some(s) => {
                let mut chars = s.chars();
                match (chars.next(), chars.next()) {
                    (Some(c), None) if !c.is_whitespace() && !c.is_alphanumeric() => {
                        Separator::Char(c)
                    }
                    _ => {
                        return Err(p.bad(
                            "separator",
                            format!("{s:?} is neither \"whitespace\" nor one punctuation character such as \"=\""),
                        ));
                    }
                }
            }
        };
        let sshd = separator == Separator::Whitespace;
        let key = p.required("key")?;
        if key.len() > 256
            || key.chars().any(char::is_whitespace)
            || matches!(separator, Separator::Char(c) if key.contains(c))
        {
            return Err(p.bad(
                "key",
                format!("{key:?} cannot be a key: it holds whitespace or the separator"),
            ));
        }
        let occurrence = match p.optional("occurrence") {
            None if sshd => Occurrence::First,
            None => Occurrence::Last,
            Some("first") => Occurrence::First,
            Some("last") => Occurrence::Last,
            Some(o) => return Err(p.bad("occurrence", format!("{o:?} is not first or last"))),
        };
        let keyword = |p: &mut Params<'_>, name: &'static str, default: &str| match p.optional(name)
        {
            None if sshd => Some(default.to_string()),
            None | Some("") => None,
            Some(k) => Some(k.to_string()),
        };
        let block_keyword = keyword(p, "block_keyword", "Match");
        let include_keyword = keyword(p, "include_keyword", "Include");
        let case_sensitive = p.flag("case_sensitive_keys", !sshd)?;
        let comment = p.optional("comment").unwrap_or("#").to_string();
        if comment.is_empty() || comment.chars().any(char::is_whitespace) {
            return Err(p.bad(
                "comment",
                "the comment prefix must be non-blank, e.g. \"#\"",
            ));
        }
        Ok(Self {
            path,
            key: key.to_string(),
            separator,
            occurrence,
            block_keyword,
            include_keyword,
            case_sensitive,
            comment,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::Check;
    use super::super::tests::setting;

    #[test]
    fn bad_parameters_name_themselves() {
        for (params, param) in [
            (vec![("path", "/x"), ("key", "a b")], "key"),
            (
                vec![("path", "/x"), ("key", "a"), ("separator", "ab")],
                "separator",
            ),
            (
                vec![("path", "/x"), ("key", "a"), ("occurrence", "middle")],
                "occurrence",
            ),
            (
                vec![("path", "/x"), ("key", "a"), ("case_sensitive_keys", "yes")],
                "case_sensitive_keys",
            ),
            (vec![("path", "/x")], "key"),
        ] {
            let s = setting("config_line", &params, "equals", "x");
            let e = Check::parse(&s).unwrap_err();
            assert_eq!(e.param(), Some(param), "{e}");
        }
    }
}
