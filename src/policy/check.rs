//! Check strings in oslo.policy's language, parsed once and evaluated per
//! request.
//!
//! Grammar (what every default rule of Keystone, Nova and Glance uses):
//!
//! ```text
//! expr  := or
//! or    := and ("or" and)*
//! and   := not ("and" not)*
//! not   := "not" not | "(" expr ")" | check
//! check := "@" | "!" | kind ":" match
//! ```
//!
//! `role:NAME` holds when the caller has the role (case-insensitive);
//! `rule:NAME` evaluates another rule of the same service; `http:`/`https:`
//! (remote checks) are refused, and never hold. Any other `kind:match` is a
//! generic check: `match` has its `%(key)s` placeholders filled from the
//! target (a missing key makes the check false), then it is compared with
//! the credential named by `kind` (`user_id`, `project_id`, `domain_id`,
//! `system_scope`, …; an absent one reads `None`, as Python's str(None))
//! or, when `kind` is a quoted literal or `True`/`False`/`None`,
//! with that literal. An empty check string always holds, as in oslo.policy.

use super::{Credentials, Target};

/// A parsed check string.
#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    /// `@`, or an empty check string.
    Always,
    /// `!`, and checks that can never hold (remote `http:` checks).
    Never,
    /// `role:NAME`.
    Role(Template),
    /// `rule:NAME`.
    Rule(String),
    /// `kind:match` against a credential attribute.
    Credential {
        attribute: String,
        value: Template,
    },
    /// `'literal':match` (and `True:`/`False:`) against a literal.
    Literal {
        literal: String,
        value: Template,
    },
    Not(Box<Check>),
    And(Vec<Check>),
    Or(Vec<Check>),
}

/// A match string with `%(key)s` placeholders filled from the target.
#[derive(Debug, Clone, PartialEq)]
pub struct Template(Vec<Piece>);

#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(String),
    Key(String),
}

impl Template {
    fn parse(text: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("%(") {
            if start > 0 {
                pieces.push(Piece::Text(rest[..start].to_string()));
            }
            let after = &rest[start + 2..];
            let end = after
                .find(")s")
                .ok_or_else(|| format!("unterminated placeholder in '{text}'"))?;
            pieces.push(Piece::Key(after[..end].to_string()));
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_string()));
        }
        Ok(Template(pieces))
    }

    /// The template filled from the target; `None` when a key is missing.
    fn fill(&self, target: &Target) -> Option<String> {
        match self.0.as_slice() {
            [Piece::Text(text)] => Some(text.clone()),
            [Piece::Key(key)] => target.get(key).map(str::to_string),
            pieces => {
                let mut out = String::new();
                for piece in pieces {
                    match piece {
                        Piece::Text(text) => out.push_str(text),
                        Piece::Key(key) => out.push_str(target.get(key)?),
                    }
                }
                Some(out)
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Open,
    Close,
    And,
    Or,
    Not,
    Check(Check),
}

/// Parses a check string. Errors name what was wrong.
pub fn parse(text: &str) -> Result<Check, String> {
    let tokens = tokenize(text)?;
    if tokens.is_empty() {
        return Ok(Check::Always);
    }
    let mut parser = Parser { tokens, pos: 0 };
    let check = parser.or()?;
    if parser.pos != parser.tokens.len() {
        return Err(format!("unexpected text after position {}", parser.pos));
    }
    Ok(check)
}

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    for word in text.split_whitespace() {
        let trimmed = word.trim_start_matches('(');
        for _ in 0..word.len() - trimmed.len() {
            tokens.push(Token::Open);
        }
        if trimmed.is_empty() {
            continue;
        }
        let clean = trimmed.trim_end_matches(')');
        let closing = trimmed.len() - clean.len();
        match clean.to_ascii_lowercase().as_str() {
            "" => {}
            "and" => tokens.push(Token::And),
            "or" => tokens.push(Token::Or),
            "not" => tokens.push(Token::Not),
            _ => tokens.push(Token::Check(parse_check(clean)?)),
        }
        for _ in 0..closing {
            tokens.push(Token::Close);
        }
    }
    Ok(tokens)
}

fn parse_check(text: &str) -> Result<Check, String> {
    match text {
        "@" => return Ok(Check::Always),
        "!" => return Ok(Check::Never),
        _ => {}
    }
    let Some((kind, value)) = text.split_once(':') else {
        return Err(format!("'{text}' is not a check (kind:match, @ or !)"));
    };
    Ok(match kind {
        "rule" => Check::Rule(value.to_string()),
        "role" => Check::Role(Template::parse(value)?),
        "http" | "https" => Check::Never,
        "True" | "False" | "None" => Check::Literal {
            literal: kind.to_string(),
            value: Template::parse(value)?,
        },
        _ if kind.len() >= 2
            && ((kind.starts_with('\'') && kind.ends_with('\''))
                || (kind.starts_with('"') && kind.ends_with('"'))) =>
        {
            Check::Literal {
                literal: kind[1..kind.len() - 1].to_string(),
                value: Template::parse(value)?,
            }
        }
        _ if kind.is_empty() => return Err(format!("'{text}' has no kind")),
        _ => Check::Credential {
            attribute: kind.to_string(),
            value: Template::parse(value)?,
        },
    })
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn or(&mut self) -> Result<Check, String> {
        let mut terms = vec![self.and()?];
        while self.peek() == Some(&Token::Or) {
            self.pos += 1;
            terms.push(self.and()?);
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Check::Or(terms)
        })
    }

    fn and(&mut self) -> Result<Check, String> {
        let mut terms = vec![self.unary()?];
        while self.peek() == Some(&Token::And) {
            self.pos += 1;
            terms.push(self.unary()?);
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            Check::And(terms)
        })
    }

    fn unary(&mut self) -> Result<Check, String> {
        let token = self.peek().cloned();
        self.pos += 1;
        match token {
            Some(Token::Not) => Ok(Check::Not(Box::new(self.unary()?))),
            Some(Token::Open) => {
                let inner = self.or()?;
                if self.peek() != Some(&Token::Close) {
                    return Err("missing ')'".into());
                }
                self.pos += 1;
                Ok(inner)
            }
            Some(Token::Check(check)) => Ok(check),
            Some(other) => Err(format!("unexpected {other:?}")),
            None => Err("the check string ends too early".into()),
        }
    }
}

/// Looks up another rule of the same service for `rule:NAME`.
pub trait RuleLookup {
    fn rule(&self, name: &str) -> Option<&Check>;
}

/// Evaluates a check. `depth` bounds `rule:` recursion, so a policy file
/// whose rules refer to each other in a loop fails closed.
pub fn holds(
    check: &Check,
    creds: &Credentials,
    target: &Target,
    rules: &dyn RuleLookup,
    depth: usize,
) -> bool {
    match check {
        Check::Always => true,
        Check::Never => false,
        Check::Role(name) => name
            .fill(target)
            .is_some_and(|name| creds.roles.iter().any(|r| r.eq_ignore_ascii_case(&name))),
        Check::Rule(name) => {
            depth < 32
                && rules
                    .rule(name)
                    .is_some_and(|inner| holds(inner, creds, target, rules, depth + 1))
        }
        Check::Credential { attribute, value } => match value.fill(target) {
            // oslo's context sets is_admin from the service's own
            // context_is_admin rule (Nova, Glance, Cinder); Keystone's
            // `is_admin:1` is for its bootstrap token, which yunhe has not.
            Some(wanted) if attribute == "is_admin" => {
                let admin = depth < 32
                    && rules
                        .rule("context_is_admin")
                        .is_some_and(|inner| holds(inner, creds, target, rules, depth + 1));
                wanted == if admin { "True" } else { "False" }
            }
            Some(wanted) => creds.attribute(attribute) == wanted,
            None => false,
        },
        Check::Literal { literal, value } => value.fill(target).is_some_and(|v| v == *literal),
        Check::Not(inner) => !holds(inner, creds, target, rules, depth),
        Check::And(terms) => terms.iter().all(|t| holds(t, creds, target, rules, depth)),
        Check::Or(terms) => terms.iter().any(|t| holds(t, creds, target, rules, depth)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_shapes_openstack_uses() {
        let check = parse("(role:reader and system_scope:all) or user_id:%(target.user.id)s")
            .expect("parses");
        let Check::Or(terms) = check else {
            panic!("or expected")
        };
        assert_eq!(terms.len(), 2);
        assert!(matches!(&terms[0], Check::And(t) if t.len() == 2));
        assert_eq!(parse("").expect("empty"), Check::Always);
        assert_eq!(parse("@").expect("@"), Check::Always);
        assert_eq!(parse("!").expect("!"), Check::Never);
        assert!(matches!(parse("not role:admin"), Ok(Check::Not(_))));
        assert!(matches!(
            parse("'member':%(role.name)s"),
            Ok(Check::Literal { .. })
        ));
        assert!(matches!(parse("((rule:a))"), Ok(Check::Rule(n)) if n == "a"));
    }

    #[test]
    fn refuses_broken_check_strings() {
        for bad in [
            "role:admin and",
            "(role:admin",
            "role:admin)",
            "admin",
            "role:%(x",
            "or role:a",
        ] {
            assert!(parse(bad).is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn templates_fill_from_the_target() {
        let t = Template::parse("%(project_id)s").expect("parses");
        let target = Target::new().with("project_id", "p1");
        assert_eq!(t.fill(&target).as_deref(), Some("p1"));
        assert_eq!(t.fill(&Target::new()), None);
        let t = Template::parse("a-%(x)s-b").expect("parses");
        assert_eq!(
            t.fill(&Target::new().with("x", "1")).as_deref(),
            Some("a-1-b")
        );
    }
}
