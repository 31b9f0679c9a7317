//! TraceQL tokens: what Tempo 3.0's lexer produces, each with the character
//! offset where it starts so errors can say where they are.

use super::{QueryError, err_at};

/// Attribute scopes (`span.`, `resource.`, ...; `.x` is [`Scope::Any`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    Any,
    Span,
    Resource,
    Event,
    Link,
    Instrumentation,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    LBrace,
    RBrace,
    LParen,
    RParen,
    Comma,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    /// `=~`
    Re,
    /// `!~`: not-regex inside a spanset, not-sibling between spansets.
    NotRe,
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    Not,
    And,
    Or,
    Pipe,
    /// `>>`
    Desc,
    /// `<<`
    Ance,
    /// `~`
    Sibl,
    /// `!>`
    NotChild,
    /// `!<`
    NotParent,
    /// `!>>`
    NotDesc,
    /// `!<<`
    NotAnce,
    /// `&>`
    UnionChild,
    /// `&<`
    UnionParent,
    /// `&>>`
    UnionDesc,
    /// `&<<`
    UnionAnce,
    /// `&~`
    UnionSibl,
    Str(String),
    Int(i64),
    Float(f64),
    /// Nanoseconds.
    Duration(i64),
    /// A keyword or a bare name (`status`, `count`, `error`, `foo`).
    Ident(String),
    /// `scope:name`, e.g. `span:duration`, `trace:id`.
    Intrinsic(String, String),
    /// An attribute: its scope, whether it is read on the parent span
    /// (`parent.`), and its name (quoted parts already unquoted).
    Attr(Scope, bool, String),
}

/// Characters that end an attribute name, as in Tempo (everything else,
/// including `.`, `:`, `-`, `/`, `+`, is part of it).
fn ends_attribute(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '{' | '}' | '(' | ')' | '=' | '~' | '!' | '<' | '>' | '&' | '|' | '^' | ','
        )
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn scope_of(word: &str) -> Option<Scope> {
    Some(match word {
        "span" => Scope::Span,
        "resource" => Scope::Resource,
        "event" => Scope::Event,
        "link" => Scope::Link,
        "instrumentation" => Scope::Instrumentation,
        _ => return None,
    })
}

/// Splits the query into tokens with the character offset of each.
///
/// # Errors
/// On an unterminated string, a malformed number or duration, or a character
/// TraceQL does not use; the message names the character position.
pub(crate) fn lex(input: &str) -> Result<Vec<(Tok, usize)>, QueryError> {
    let chars: Vec<char> = input.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let at = |n: usize| chars.get(i + n).copied();
        let start = i;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        // Longest operator first.
        let ops: [(&str, Tok); 34] = [
            ("!>>", Tok::NotDesc),
            ("!<<", Tok::NotAnce),
            ("&>>", Tok::UnionDesc),
            ("&<<", Tok::UnionAnce),
            ("&&", Tok::And),
            ("||", Tok::Or),
            ("=~", Tok::Re),
            ("!~", Tok::NotRe),
            ("!=", Tok::Ne),
            (">=", Tok::Ge),
            ("<=", Tok::Le),
            (">>", Tok::Desc),
            ("<<", Tok::Ance),
            ("!>", Tok::NotChild),
            ("!<", Tok::NotParent),
            ("&>", Tok::UnionChild),
            ("&<", Tok::UnionParent),
            ("&~", Tok::UnionSibl),
            ("{", Tok::LBrace),
            ("}", Tok::RBrace),
            ("(", Tok::LParen),
            (")", Tok::RParen),
            (",", Tok::Comma),
            ("=", Tok::Eq),
            ("<", Tok::Lt),
            (">", Tok::Gt),
            ("~", Tok::Sibl),
            ("+", Tok::Add),
            ("-", Tok::Sub),
            ("*", Tok::Mul),
            ("/", Tok::Div),
            ("%", Tok::Mod),
            ("^", Tok::Pow),
            ("!", Tok::Not),
        ];
        let starts_number =
            c.is_ascii_digit() || (c == '.' && at(1).is_some_and(|n| n.is_ascii_digit()));
        if !starts_number {
            if let Some((text, tok)) = ops
                .iter()
                .find(|(text, _)| text.chars().enumerate().all(|(k, ch)| at(k) == Some(ch)))
            {
                out.push((tok.clone(), start));
                i += text.chars().count();
                continue;
            }
            if c == '|' {
                out.push((Tok::Pipe, start));
                i += 1;
                continue;
            }
        }
        match c {
            '"' | '`' => {
                let (s, next) = string(&chars, i)?;
                out.push((Tok::Str(s), start));
                i = next;
            }
            _ if starts_number => {
                let (tok, next) = number(&chars, i)?;
                out.push((tok, start));
                i = next;
            }
            '.' => {
                let (name, next) = attribute_name(&chars, i + 1)?;
                out.push((Tok::Attr(Scope::Any, false, name), start));
                i = next;
            }
            c if is_word_char(c) => {
                let mut j = i;
                while j < chars.len() && is_word_char(chars[j]) {
                    j += 1;
                }
                let word: String = chars[i..j].iter().collect();
                match chars.get(j) {
                    Some('.') if word == "parent" => {
                        // parent.x, parent.span.x, parent.resource.x
                        let rest: String = chars[j + 1..].iter().take(9).collect();
                        let (scope, skip) = if rest.starts_with("span.") {
                            (Scope::Span, 5)
                        } else if rest.starts_with("resource.") {
                            (Scope::Resource, 9)
                        } else {
                            (Scope::Any, 0)
                        };
                        let (name, next) = attribute_name(&chars, j + 1 + skip)?;
                        out.push((Tok::Attr(scope, true, name), start));
                        i = next;
                    }
                    Some('.') if scope_of(&word).is_some() => {
                        let (name, next) = attribute_name(&chars, j + 1)?;
                        let scope = scope_of(&word).expect("checked");
                        out.push((Tok::Attr(scope, false, name), start));
                        i = next;
                    }
                    Some(':') if scope_of(&word).is_some() || word == "trace" => {
                        let mut k = j + 1;
                        while k < chars.len() && is_word_char(chars[k]) {
                            k += 1;
                        }
                        let name: String = chars[j + 1..k].iter().collect();
                        if name.is_empty() {
                            return err_at(
                                start,
                                format!("missing intrinsic name after `{word}:`"),
                            );
                        }
                        out.push((Tok::Intrinsic(word, name), start));
                        i = k;
                    }
                    Some('.' | ':') => {
                        // An unscoped dotted name such as `http.method`:
                        // keep it whole so the error can suggest `.http.method`.
                        let mut k = j;
                        while k < chars.len() && !ends_attribute(chars[k]) {
                            k += 1;
                        }
                        out.push((Tok::Ident(chars[i..k].iter().collect()), start));
                        i = k;
                    }
                    _ => {
                        out.push((Tok::Ident(word), start));
                        i = j;
                    }
                }
            }
            other => {
                return err_at(start, format!("unexpected character {other:?}"));
            }
        }
    }
    Ok(out)
}

/// Reads an attribute name starting at `i`: everything up to a character
/// that ends attributes, with `"quoted parts"` taken literally.
fn attribute_name(chars: &[char], mut i: usize) -> Result<(String, usize), QueryError> {
    let start = i;
    let mut name = String::new();
    while i < chars.len() {
        let c = chars[i];
        if c == '"' {
            i += 1;
            loop {
                match chars.get(i) {
                    None => return err_at(start, "unterminated quoted attribute name"),
                    Some('"') => {
                        i += 1;
                        break;
                    }
                    Some('\\') => match chars.get(i + 1) {
                        Some(&e @ ('"' | '\\')) => {
                            name.push(e);
                            i += 2;
                        }
                        _ => {
                            return err_at(
                                i,
                                "invalid escape in a quoted attribute name: only \\\" and \\\\ are allowed",
                            );
                        }
                    },
                    Some(&ch) => {
                        name.push(ch);
                        i += 1;
                    }
                }
            }
        } else if ends_attribute(c) {
            break;
        } else {
            name.push(c);
            i += 1;
        }
    }
    if name.is_empty() {
        return err_at(
            start.saturating_sub(1),
            "missing attribute name after the scope",
        );
    }
    Ok((name, i))
}

fn string(chars: &[char], start: usize) -> Result<(String, usize), QueryError> {
    let quote = chars[start];
    let mut s = String::new();
    let mut i = start + 1;
    loop {
        match chars.get(i) {
            None => return err_at(start, "unterminated string literal"),
            Some(&ch) if ch == quote => return Ok((s, i + 1)),
            Some('\\') if quote == '"' => {
                match chars.get(i + 1).copied() {
                    Some('n') => s.push('\n'),
                    Some('t') => s.push('\t'),
                    Some('r') => s.push('\r'),
                    Some(ch @ ('"' | '\\')) => s.push(ch),
                    // Keep regex escapes such as `\d` as written.
                    Some(ch) => {
                        s.push('\\');
                        s.push(ch);
                    }
                    None => return err_at(start, "unterminated string literal"),
                }
                i += 2;
            }
            Some(&ch) => {
                s.push(ch);
                i += 1;
            }
        }
    }
}

/// A number, or a duration when units follow without a space (`1.5s`,
/// `1m30s`, `2d`). Bare numbers stay numbers: compared with a duration they
/// count nanoseconds, as in Tempo.
fn number(chars: &[char], start: usize) -> Result<(Tok, usize), QueryError> {
    let mut i = start;
    while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
        i += 1;
    }
    // Exponent (1e3, 2.5E-3).
    if matches!(chars.get(i), Some('e' | 'E'))
        && (chars.get(i + 1).is_some_and(|c| c.is_ascii_digit())
            || (matches!(chars.get(i + 1), Some('+' | '-'))
                && chars.get(i + 2).is_some_and(|c| c.is_ascii_digit())))
    {
        i += 2;
        while i < chars.len() && chars[i].is_ascii_digit() {
            i += 1;
        }
    }
    let mut j = i;
    while j < chars.len() && (chars[j].is_alphanumeric() || chars[j] == '.' || chars[j] == 'µ') {
        j += 1;
    }
    let text: String = chars[start..j].iter().collect();
    if j > i {
        return match parse_duration(&text) {
            Some(ns) => Ok((Tok::Duration(ns), j)),
            None => err_at(start, format!("invalid number or duration {text:?}")),
        };
    }
    let text: String = chars[start..i].iter().collect();
    if !text.contains(['.', 'e', 'E']) {
        return match text.parse::<i64>() {
            Ok(n) => Ok((Tok::Int(n), i)),
            Err(_) => err_at(start, format!("integer {text} is out of range")),
        };
    }
    match text.parse::<f64>() {
        Ok(f) => Ok((Tok::Float(f), i)),
        Err(_) => err_at(start, format!("invalid number {text:?}")),
    }
}

/// Parses a duration as Tempo does (Prometheus units `ms s m h d w y` and
/// Go's `ns us µs`, combined as in `1h30m`), in nanoseconds.
pub(crate) fn parse_duration(s: &str) -> Option<i64> {
    let s = s.trim();
    if s == "0" {
        return Some(0);
    }
    if s.is_empty() {
        return None;
    }
    let mut total: f64 = 0.0;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let value: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let scale = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "d" => 86_400e9,
            "w" => 7.0 * 86_400e9,
            "y" => 365.0 * 86_400e9,
            _ => return None,
        };
        total += value * scale;
    }
    if total.is_finite() && total >= 0.0 && total < i64::MAX as f64 {
        Some(total.round() as i64)
    } else {
        None
    }
}
