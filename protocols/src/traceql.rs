//! A TraceQL subset for Tempo's `/api/search` (what Grafana's search builder
//! and people write most):
//!
//! - spansets `{ ... }` (`{}` matches every span), combined with `&&`, `||`,
//!   `>` (child) and `>>` (descendant), with parentheses;
//! - inside a spanset, comparisons joined with `&&` / `||` and parentheses;
//!   operators `=`, `!=`, `=~`, `!~` (regular expressions match the whole
//!   value, as in Tempo), `>`, `>=`, `<`, `<=`;
//! - attributes `.key` (span, else resource), `span.key`, `resource.key`
//!   (keys may be quoted: `span."a b"`);
//! - intrinsics `name`, `status`, `statusMessage`, `kind`, `duration`,
//!   `traceDuration`, `rootName`, `rootServiceName`, `event:name`,
//!   `instrumentation:name`, `instrumentation:version`, `trace:id` and the
//!   colon forms `span:name`, `span:status`, `span:statusMessage`,
//!   `span:kind`, `span:duration`, `trace:duration`, `trace:rootName`,
//!   `trace:rootService`;
//! - literals: strings, integers, floats, durations (`150ms`), `true` /
//!   `false`, statuses (`error`, `ok`, `unset`), kinds (`server`, ...).
//!
//! Span-level comparisons compile to SQL; trace-level ones (`traceDuration`,
//! `rootName`, `rootServiceName`, `trace:id`) and the spanset operators are
//! evaluated over each candidate trace's tree.

use std::fmt;

use crate::params::{parse_duration, quote};

#[derive(Debug, Clone, PartialEq)]
pub enum Query {
    Spanset(Cond),
    And(Box<Query>, Box<Query>),
    Or(Box<Query>, Box<Query>),
    /// Spans of the right side whose parent matches the left side.
    Child(Box<Query>, Box<Query>),
    /// Spans of the right side with an ancestor matching the left side.
    Descendant(Box<Query>, Box<Query>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    True,
    And(Box<Cond>, Box<Cond>),
    Or(Box<Cond>, Box<Cond>),
    Cmp(Cmp),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Cmp {
    pub field: Field,
    pub op: Op,
    pub value: Literal,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    SpanAttr(String),
    ResourceAttr(String),
    AnyAttr(String),
    Name,
    Status,
    StatusMessage,
    Kind,
    Duration,
    EventName,
    ScopeName,
    ScopeVersion,
    TraceDuration,
    RootName,
    RootService,
    TraceId,
}

impl Field {
    /// Fields known only for a whole trace.
    pub fn is_trace_level(&self) -> bool {
        matches!(
            self,
            Self::TraceDuration | Self::RootName | Self::RootService | Self::TraceId
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Match,
    NotMatch,
    Gt,
    Ge,
    Lt,
    Le,
}

impl Op {
    fn sql(self) -> &'static str {
        match self {
            Self::Eq => "=",
            Self::Ne => "<>",
            Self::Gt => ">",
            Self::Ge => ">=",
            Self::Lt => "<",
            Self::Le => "<=",
            Self::Match => "~",
            Self::NotMatch => "!~",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Str(String),
    Int(i64),
    Float(f64),
    /// Nanoseconds.
    Duration(i64),
    Bool(bool),
    /// `error`, `ok`, `unset`, `server`, ... (lower case).
    Keyword(String),
}

/// A TraceQL syntax error, with the position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub at: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceQL at {}: {}", self.at, self.message)
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    LBrace,
    RBrace,
    LParen,
    RParen,
    AndAnd,
    OrOr,
    Gt,
    Ge,
    Lt,
    Le,
    Eq,
    Ne,
    Match,
    NotMatch,
    Descendant,
    Str(String),
    /// An identifier or bare literal (`span.http.route`, `150ms`, `error`).
    Word(String),
}

fn tokenize(text: &str) -> Result<Vec<(usize, Token)>, ParseError> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let err = |at: usize, m: &str| ParseError {
        at,
        message: m.to_string(),
    };
    while i < bytes.len() {
        let c = bytes[i];
        let two = text.get(i..i + 2).unwrap_or("");
        let (token, len) = match (c, two) {
            (b' ' | b'\t' | b'\n' | b'\r', _) => {
                i += 1;
                continue;
            }
            (_, "&&") => (Token::AndAnd, 2),
            (_, "||") => (Token::OrOr, 2),
            (_, ">>") => (Token::Descendant, 2),
            (_, ">=") => (Token::Ge, 2),
            (_, "<=") => (Token::Le, 2),
            (_, "!=") => (Token::Ne, 2),
            (_, "=~") => (Token::Match, 2),
            (_, "!~") => (Token::NotMatch, 2),
            (b'{', _) => (Token::LBrace, 1),
            (b'}', _) => (Token::RBrace, 1),
            (b'(', _) => (Token::LParen, 1),
            (b')', _) => (Token::RParen, 1),
            (b'>', _) => (Token::Gt, 1),
            (b'<', _) => (Token::Lt, 1),
            (b'=', _) => (Token::Eq, 1),
            (b'"' | b'`', _) => {
                let quote = c;
                let mut s = String::new();
                let mut j = i + 1;
                loop {
                    let Some(&b) = bytes.get(j) else {
                        return Err(err(i, "unterminated string"));
                    };
                    if b == quote {
                        break;
                    }
                    if b == b'\\' && quote == b'"' {
                        let Some(&e) = bytes.get(j + 1) else {
                            return Err(err(j, "unterminated escape"));
                        };
                        s.push(match e {
                            b'n' => '\n',
                            b't' => '\t',
                            other => other as char,
                        });
                        j += 2;
                        continue;
                    }
                    let ch = text[j..].chars().next().expect("in bounds");
                    s.push(ch);
                    j += ch.len_utf8();
                }
                out.push((i, Token::Str(s)));
                i = j + 1;
                continue;
            }
            _ => {
                let start = i;
                let mut j = i;
                while j < bytes.len() {
                    let b = bytes[j];
                    if b.is_ascii_alphanumeric()
                        || matches!(b, b'.' | b'_' | b':' | b'-' | b'/')
                        || b >= 0x80
                    {
                        j += 1;
                    } else if b == b'"' && j > start && bytes[j - 1] == b'.' {
                        // span."quoted key": keep the quoted part in the word.
                        let end = text[j + 1..]
                            .find('"')
                            .ok_or_else(|| err(j, "unterminated quoted attribute name"))?;
                        j += end + 2;
                    } else {
                        break;
                    }
                }
                if j == start {
                    return Err(err(i, &format!("unexpected character {:?}", c as char)));
                }
                out.push((start, Token::Word(text[start..j].to_string())));
                i = j;
                continue;
            }
        };
        out.push((i, token));
        i += len;
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<(usize, Token)>,
    pos: usize,
    len: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos).map(|(_, t)| t)
    }

    fn at(&self) -> usize {
        self.tokens.get(self.pos).map_or(self.len, |(a, _)| *a)
    }

    fn err<T>(&self, message: impl Into<String>) -> Result<T, ParseError> {
        Err(ParseError {
            at: self.at(),
            message: message.into(),
        })
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).map(|(_, t)| t.clone());
        self.pos += 1;
        t
    }

    fn expect(&mut self, token: Token, what: &str) -> Result<(), ParseError> {
        if self.peek() == Some(&token) {
            self.pos += 1;
            Ok(())
        } else {
            self.err(format!("expected {what}"))
        }
    }

    // query := structural (('&&' | '||') structural)*, && binding tighter
    fn query(&mut self) -> Result<Query, ParseError> {
        let mut left = self.query_and()?;
        while self.peek() == Some(&Token::OrOr) {
            self.pos += 1;
            let right = self.query_and()?;
            left = Query::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn query_and(&mut self) -> Result<Query, ParseError> {
        let mut left = self.structural()?;
        while self.peek() == Some(&Token::AndAnd) {
            self.pos += 1;
            let right = self.structural()?;
            left = Query::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn structural(&mut self) -> Result<Query, ParseError> {
        let mut left = self.spanset()?;
        loop {
            let op = match self.peek() {
                Some(Token::Gt) => Query::Child,
                Some(Token::Descendant) => Query::Descendant,
                _ => return Ok(left),
            };
            self.pos += 1;
            let right = self.spanset()?;
            left = op(Box::new(left), Box::new(right));
        }
    }

    fn spanset(&mut self) -> Result<Query, ParseError> {
        match self.next() {
            Some(Token::LParen) => {
                let q = self.query()?;
                self.expect(Token::RParen, "')'")?;
                Ok(q)
            }
            Some(Token::LBrace) => {
                if self.peek() == Some(&Token::RBrace) {
                    self.pos += 1;
                    return Ok(Query::Spanset(Cond::True));
                }
                let c = self.cond()?;
                self.expect(Token::RBrace, "'}' closing the spanset")?;
                Ok(Query::Spanset(c))
            }
            _ => {
                self.pos -= 1;
                self.err("expected a spanset '{ ... }'")
            }
        }
    }

    fn cond(&mut self) -> Result<Cond, ParseError> {
        let mut left = self.cond_and()?;
        while self.peek() == Some(&Token::OrOr) {
            self.pos += 1;
            let right = self.cond_and()?;
            left = Cond::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn cond_and(&mut self) -> Result<Cond, ParseError> {
        let mut left = self.cond_atom()?;
        while self.peek() == Some(&Token::AndAnd) {
            self.pos += 1;
            let right = self.cond_atom()?;
            left = Cond::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn cond_atom(&mut self) -> Result<Cond, ParseError> {
        if self.peek() == Some(&Token::LParen) {
            self.pos += 1;
            let c = self.cond()?;
            self.expect(Token::RParen, "')'")?;
            return Ok(c);
        }
        let at = self.at();
        let Some(Token::Word(word)) = self.next() else {
            self.pos -= 1;
            return self.err("expected an attribute or intrinsic");
        };
        let field = field(&word).ok_or_else(|| ParseError {
            at,
            message: format!("unknown field {word:?}: use .attr, span.attr, resource.attr or an intrinsic (name, status, kind, duration, ...)"),
        })?;
        let op = match self.next() {
            Some(Token::Eq) => Op::Eq,
            Some(Token::Ne) => Op::Ne,
            Some(Token::Match) => Op::Match,
            Some(Token::NotMatch) => Op::NotMatch,
            Some(Token::Gt) => Op::Gt,
            Some(Token::Ge) => Op::Ge,
            Some(Token::Lt) => Op::Lt,
            Some(Token::Le) => Op::Le,
            _ => {
                self.pos -= 1;
                return self.err(format!("expected a comparison operator after {word}"));
            }
        };
        let at = self.at();
        let value = match self.next() {
            Some(Token::Str(s)) => Literal::Str(s),
            Some(Token::Word(w)) => literal(&w).ok_or_else(|| ParseError {
                at,
                message: format!("{w:?} is not a value: quote strings, e.g. \"{w}\""),
            })?,
            _ => {
                self.pos -= 1;
                return self.err("expected a value");
            }
        };
        if matches!(op, Op::Match | Op::NotMatch) {
            let Literal::Str(re) = &value else {
                return Err(ParseError {
                    at,
                    message: "a regular expression must be a string".into(),
                });
            };
            if let Err(e) = regex::Regex::new(&format!("^(?:{re})$")) {
                return Err(ParseError {
                    at,
                    message: format!("invalid regular expression: {e}"),
                });
            }
        }
        Ok(Cond::Cmp(Cmp { field, op, value }))
    }
}

fn field(word: &str) -> Option<Field> {
    let unquote = |k: &str| k.trim_matches('"').to_string();
    Some(match word {
        "name" | "span:name" => Field::Name,
        "status" | "span:status" => Field::Status,
        "statusMessage" | "span:statusMessage" => Field::StatusMessage,
        "kind" | "span:kind" => Field::Kind,
        "duration" | "span:duration" => Field::Duration,
        "traceDuration" | "trace:duration" => Field::TraceDuration,
        "rootName" | "trace:rootName" => Field::RootName,
        "rootServiceName" | "trace:rootService" => Field::RootService,
        "trace:id" => Field::TraceId,
        "event:name" => Field::EventName,
        "instrumentation:name" => Field::ScopeName,
        "instrumentation:version" => Field::ScopeVersion,
        _ => {
            if let Some(k) = word.strip_prefix("span.") {
                Field::SpanAttr(unquote(k))
            } else if let Some(k) = word.strip_prefix("resource.") {
                Field::ResourceAttr(unquote(k))
            } else if let Some(k) = word.strip_prefix('.') {
                Field::AnyAttr(unquote(k))
            } else {
                return None;
            }
        }
    })
}

fn literal(word: &str) -> Option<Literal> {
    match word {
        "true" => return Some(Literal::Bool(true)),
        "false" => return Some(Literal::Bool(false)),
        "error" | "ok" | "unset" | "server" | "client" | "producer" | "consumer" | "internal"
        | "unspecified" => return Some(Literal::Keyword(word.to_string())),
        _ => {}
    }
    if let Ok(i) = word.parse::<i64>() {
        return Some(Literal::Int(i));
    }
    if let Ok(f) = word.parse::<f64>() {
        return Some(Literal::Float(f));
    }
    parse_duration(word).ok().map(Literal::Duration)
}

/// Parses a TraceQL query.
pub fn parse(text: &str) -> Result<Query, ParseError> {
    let tokens = tokenize(text)?;
    let mut p = Parser {
        tokens,
        pos: 0,
        len: text.len(),
    };
    let q = p.query()?;
    if p.pos < p.tokens.len() {
        return p.err("unexpected text after the query");
    }
    Ok(q)
}

impl Query {
    /// The spanset conditions, left to right.
    pub fn spansets(&self) -> Vec<&Cond> {
        match self {
            Query::Spanset(c) => vec![c],
            Query::And(a, b) | Query::Or(a, b) | Query::Child(a, b) | Query::Descendant(a, b) => {
                let mut v = a.spansets();
                v.extend(b.spansets());
                v
            }
        }
    }
}

impl Cond {
    /// Span-level comparisons, left to right (trace-level ones excluded).
    pub fn span_comparisons<'a>(&'a self, out: &mut Vec<&'a Cmp>) {
        match self {
            Cond::True => {}
            Cond::And(a, b) | Cond::Or(a, b) => {
                a.span_comparisons(out);
                b.span_comparisons(out);
            }
            Cond::Cmp(c) if !c.field.is_trace_level() => out.push(c),
            Cond::Cmp(_) => {}
        }
    }

    /// SQL that every span matching this condition meets (trace-level
    /// comparisons count as true): a superset, for finding candidates.
    pub fn prefilter_sql(&self) -> String {
        match self {
            Cond::True => "TRUE".into(),
            Cond::And(a, b) => format!("({} AND {})", a.prefilter_sql(), b.prefilter_sql()),
            Cond::Or(a, b) => format!("({} OR {})", a.prefilter_sql(), b.prefilter_sql()),
            Cond::Cmp(c) if c.field.is_trace_level() => "TRUE".into(),
            Cond::Cmp(c) => c.sql(),
        }
    }
}

fn status_name(k: &str) -> String {
    k.to_ascii_uppercase()
}

impl Cmp {
    /// SQL for a span-level comparison (`FALSE` where the types cannot
    /// compare, as TraceQL matches nothing then).
    pub fn sql(&self) -> String {
        let op = self.op.sql();
        let text = |column: &str| -> String {
            match (&self.value, self.op) {
                (Literal::Str(s), Op::Match | Op::NotMatch) => {
                    format!("{column} {op} {}", quote(&format!("^(?:{s})$")))
                }
                (Literal::Str(s), _) => format!("{column} {op} {}", quote(s)),
                (Literal::Int(i), _) => format!("try_cast({column} AS DOUBLE) {op} {i}"),
                (Literal::Float(f), _) => format!("try_cast({column} AS DOUBLE) {op} {f:?}"),
                (Literal::Duration(d), _) => format!("try_cast({column} AS DOUBLE) {op} {d}"),
                (Literal::Bool(b), _) => format!("{column} {op} '{b}'"),
                (Literal::Keyword(k), _) => format!("{column} {op} {}", quote(k)),
            }
        };
        let keyword = |column: &str| match &self.value {
            Literal::Keyword(k) => format!(
                "coalesce({column}, 'UNSET') {op} {}",
                quote(&status_name(k))
            ),
            _ => "FALSE".into(),
        };
        match &self.field {
            Field::SpanAttr(k) => text(&format!("span_attributes[{}]", quote(k))),
            Field::ResourceAttr(k) => text(&format!("resource_attributes[{}]", quote(k))),
            Field::AnyAttr(k) => text(&format!(
                "coalesce(span_attributes[{k}], resource_attributes[{k}])",
                k = quote(k)
            )),
            Field::Name => text("name"),
            Field::StatusMessage => text("status_message"),
            Field::ScopeName => text("scope_name"),
            Field::ScopeVersion => text("scope_version"),
            Field::Status | Field::Kind => keyword(if self.field == Field::Status {
                "status_code"
            } else {
                "kind"
            }),
            Field::Duration => match self.value {
                Literal::Duration(d) | Literal::Int(d) => format!("duration_ns {op} {d}"),
                _ => "FALSE".into(),
            },
            Field::EventName => match (&self.value, self.op) {
                (Literal::Str(s), Op::Eq) => {
                    format!("array_has(event_names(events), {})", quote(s))
                }
                (Literal::Str(s), Op::Ne) => {
                    format!("NOT array_has(event_names(events), {})", quote(s))
                }
                _ => "FALSE".into(),
            },
            Field::TraceDuration | Field::RootName | Field::RootService | Field::TraceId => {
                "TRUE".into()
            }
        }
    }

    /// Evaluates a trace-level comparison.
    pub fn eval_trace(
        &self,
        duration_ns: i64,
        root_name: &str,
        root_service: &str,
        trace_id: &str,
    ) -> bool {
        let text = |v: &str| match (&self.value, self.op) {
            (Literal::Str(s), Op::Eq) => v == s,
            (Literal::Str(s), Op::Ne) => v != s,
            (Literal::Str(s), Op::Match | Op::NotMatch) => {
                let hit = regex::Regex::new(&format!("^(?:{s})$")).is_ok_and(|r| r.is_match(v));
                hit == (self.op == Op::Match)
            }
            (Literal::Str(s), op) => compare(v.cmp(s.as_str()), op),
            _ => false,
        };
        match &self.field {
            Field::TraceDuration => match self.value {
                Literal::Duration(d) | Literal::Int(d) => compare(duration_ns.cmp(&d), self.op),
                _ => false,
            },
            Field::RootName => text(root_name),
            Field::RootService => text(root_service),
            Field::TraceId => text(trace_id.trim_start_matches('0')) || text(trace_id),
            _ => true,
        }
    }
}

fn compare(ord: std::cmp::Ordering, op: Op) -> bool {
    use std::cmp::Ordering::*;
    match op {
        Op::Eq => ord == Equal,
        Op::Ne => ord != Equal,
        Op::Gt => ord == Greater,
        Op::Ge => ord != Less,
        Op::Lt => ord == Less,
        Op::Le => ord != Greater,
        Op::Match | Op::NotMatch => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_grafana_builds() {
        let q = parse(r#"{resource.service.name="frontend" && name="GET /" && duration>100ms}"#)
            .unwrap();
        let Query::Spanset(c) = &q else {
            panic!("{q:?}")
        };
        assert_eq!(
            c.prefilter_sql(),
            "((resource_attributes['service.name'] = 'frontend' AND name = 'GET /') AND duration_ns > 100000000)"
        );
        assert_eq!(parse("{}").unwrap(), Query::Spanset(Cond::True));
        assert_eq!(parse("{ }").unwrap(), Query::Spanset(Cond::True));
    }

    #[test]
    fn operators_scopes_and_literals() {
        let q = parse(
            r#"{ (span.http.status_code >= 500 || status = error) && .region =~ "eu-.*" && kind = server && span."a b" != "x" && event:name = "exception" } >> { traceDuration > 1.5s && rootServiceName = "api" }"#,
        )
        .unwrap();
        let Query::Descendant(a, b) = &q else {
            panic!("{q:?}")
        };
        let Query::Spanset(a) = a.as_ref() else {
            panic!()
        };
        assert_eq!(
            a.prefilter_sql(),
            "(((((try_cast(span_attributes['http.status_code'] AS DOUBLE) >= 500 OR coalesce(status_code, 'UNSET') = 'ERROR') AND coalesce(span_attributes['region'], resource_attributes['region']) ~ '^(?:eu-.*)$') AND coalesce(kind, 'UNSET') = 'SERVER') AND span_attributes['a b'] <> 'x') AND array_has(event_names(events), 'exception'))"
        );
        let Query::Spanset(b) = b.as_ref() else {
            panic!()
        };
        assert_eq!(b.prefilter_sql(), "(TRUE AND TRUE)");
        assert_eq!(q.spansets().len(), 2);
        let q = parse(r#"{name="a"} && {name="b"} || {name="c"} > {name="d"}"#).unwrap();
        assert!(
            matches!(q, Query::Or(ref l, ref r) if matches!(**l, Query::And(..)) && matches!(**r, Query::Child(..)))
        );
    }

    #[test]
    fn trace_level_comparisons() {
        let c = |q: &str| {
            let Query::Spanset(Cond::Cmp(c)) = parse(q).unwrap() else {
                panic!()
            };
            c
        };
        assert!(c("{traceDuration > 1s}").eval_trace(2_000_000_000, "", "", ""));
        assert!(!c("{traceDuration > 1s}").eval_trace(1_000_000_000, "", "", ""));
        assert!(c(r#"{rootName =~ "GET .*"}"#).eval_trace(0, "GET /", "", ""));
        assert!(c(r#"{trace:rootService != "x"}"#).eval_trace(0, "", "api", ""));
        assert!(c(r#"{trace:id = "abc"}"#).eval_trace(0, "", "", "00000abc"));
    }

    #[test]
    fn errors_say_where() {
        for (q, needle) in [
            ("{name=", "expected a value"),
            ("name=\"x\"", "expected a spanset"),
            ("{foo=\"x\"}", "unknown field"),
            ("{.a = bar}", "not a value"),
            ("{.a =~ \"(\"}", "invalid regular expression"),
            ("{.a = \"x\"", "'}'"),
            ("{.a = \"x\"} {", "unexpected text"),
            ("{.a = \"x}", "unterminated string"),
            ("{.a ? 1}", "unexpected character"),
        ] {
            let e = parse(q).unwrap_err().to_string();
            assert!(e.contains(needle), "{q}: {e}");
        }
    }
}
