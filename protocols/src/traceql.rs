//! TraceQL for Tempo's `/api/search` and `/api/metrics/*` (the parts of
//! Tempo's reference that docs/api.md lists as supported):
//!
//! - spansets `{ ... }` (`{}` matches every span), combined with `&&`, `||`
//!   and the structural operators `>`, `>>`, `<`, `<<`, `~` with their
//!   negated (`!>`, ...) and union (`&>`, ...) forms, with parentheses;
//! - search pipelines ([`parse_pipeline`]): aggregate filters (`| count() >
//!   2`, `| avg(duration) > 20ms`) and `| select(...)`;
//! - metrics queries ([`parse_metrics`]): `| rate() by (...)` and the
//!   other `*_over_time` functions;
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
//!   `false`, statuses (`error`, `ok`, `unset`), kinds (`server`, ...),
//!   `nil` (`!= nil`: has the attribute).
//!
//! The query crate compiles span-level comparisons to SQL and evaluates
//! trace-level ones (`traceDuration`, `rootName`, `rootServiceName`,
//! `trace:id`) and the spanset operators over each candidate trace's tree
//! (`query/src/traceql/`).

use std::fmt;

use crate::duration::parse_nanos;

#[derive(Debug, Clone, PartialEq)]
pub enum Query {
    Spanset(Cond),
    And(Box<Query>, Box<Query>),
    Or(Box<Query>, Box<Query>),
    /// A structural operator: spans of the right side in (or, negated,
    /// not in) the relation to a span of the left side; union operators
    /// return the spans of both sides that are.
    Structural(Relation, Box<Query>, Box<Query>),
}

/// A structural operator (`>`, `>>`, `<`, `<<`, `~`, with `!` or `&`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Relation {
    pub kind: RelationKind,
    pub mode: RelationMode,
}

/// What the right side's span is to the left side's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelationKind {
    /// `>`: a child.
    Child,
    /// `>>`: a descendant.
    Descendant,
    /// `<`: the parent.
    Parent,
    /// `<<`: an ancestor.
    Ancestor,
    /// `~`: a sibling (same parent, another span).
    Sibling,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelationMode {
    /// The right side's spans that are in the relation.
    Plain,
    /// `!`: the right side's spans that are not.
    Not,
    /// `&`: the spans of both sides that are.
    Union,
}

impl Relation {
    pub fn plain(kind: RelationKind) -> Relation {
        Relation {
            kind,
            mode: RelationMode::Plain,
        }
    }
}

/// A search query: the spanset expression and the pipeline stages after
/// it (`| count() > 2`, `| select(...)`), in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Pipeline {
    pub query: Query,
    pub stages: Vec<Stage>,
}

/// A pipeline stage of a search.
#[derive(Debug, Clone, PartialEq)]
pub enum Stage {
    /// Keeps a trace's matching spans when the aggregate over them
    /// compares true (`count() > 2`, `avg(duration) > 20ms`).
    Filter {
        aggregate: Aggregate,
        op: Op,
        value: Literal,
    },
    /// Returns these fields of the matching spans (`select(.a, name)`),
    /// with their text as written.
    Select(Vec<(String, Field)>),
}

/// An aggregate over a spanset.
#[derive(Debug, Clone, PartialEq)]
pub enum Aggregate {
    Count,
    Avg(Field),
    Min(Field),
    Max(Field),
    Sum(Field),
}

impl Aggregate {
    /// The field aggregated, if any.
    pub fn field(&self) -> Option<&Field> {
        match self {
            Aggregate::Count => None,
            Aggregate::Avg(f) | Aggregate::Min(f) | Aggregate::Max(f) | Aggregate::Sum(f) => {
                Some(f)
            }
        }
    }
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
    /// `nil`: `= nil` is "has no such attribute", `!= nil` "has it".
    Nil,
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
    /// A structural operator other than `>`, `>>`, `<` (which are also
    /// comparisons) and `!~` (also "does not match").
    Rel(Relation),
    /// `|`: a pipeline stage follows (metrics queries).
    Pipe,
    Comma,
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
        let three = text.get(i..i + 3).unwrap_or("");
        let rel = |kind, mode| Token::Rel(Relation { kind, mode });
        use RelationKind as K;
        use RelationMode as M;
        let structural = match three {
            "!>>" => Some((rel(K::Descendant, M::Not), 3)),
            "!<<" => Some((rel(K::Ancestor, M::Not), 3)),
            "&>>" => Some((rel(K::Descendant, M::Union), 3)),
            "&<<" => Some((rel(K::Ancestor, M::Union), 3)),
            _ => match two {
                "<<" => Some((rel(K::Ancestor, M::Plain), 2)),
                "!>" => Some((rel(K::Child, M::Not), 2)),
                "!<" => Some((rel(K::Parent, M::Not), 2)),
                "&>" => Some((rel(K::Child, M::Union), 2)),
                "&<" => Some((rel(K::Parent, M::Union), 2)),
                "&~" => Some((rel(K::Sibling, M::Union), 2)),
                _ if c == b'~' => Some((rel(K::Sibling, M::Plain), 1)),
                _ => None,
            },
        };
        if let Some((token, len)) = structural {
            out.push((i, token));
            i += len;
            continue;
        }
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
            (b'|', _) => (Token::Pipe, 1),
            (b',', _) => (Token::Comma, 1),
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
                        // The escaped character whole (it may take several
                        // bytes): `\n`, `\t`, else the character itself.
                        let Some(e) = text[j + 1..].chars().next() else {
                            return Err(err(j, "unterminated escape"));
                        };
                        s.push(match e {
                            'n' => '\n',
                            't' => '\t',
                            other => other,
                        });
                        j += 1 + e.len_utf8();
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

    /// `(field, ...)` after `name`: the fields with their text as written
    /// (none for `()`).
    fn fields(&mut self, name: &str) -> Result<Vec<(String, Field)>, ParseError> {
        self.expect(Token::LParen, &format!("'(' after {name}"))?;
        let mut fields = Vec::new();
        if self.peek() == Some(&Token::RParen) {
            self.pos += 1;
            return Ok(fields);
        }
        loop {
            let at = self.at();
            let Some(Token::Word(word)) = self.next() else {
                self.pos -= 1;
                return self.err(format!("expected a field in {name}(...)"));
            };
            let field = field(&word).ok_or_else(|| ParseError {
                at,
                message: format!("unknown field {word:?} in {name}(...)"),
            })?;
            fields.push((word, field));
            match self.next() {
                Some(Token::Comma) => continue,
                Some(Token::RParen) => return Ok(fields),
                _ => {
                    self.pos -= 1;
                    return self.err(format!("expected ',' or ')' in {name}(...)"));
                }
            }
        }
    }

    /// A search pipeline stage: an aggregate filter or `select(...)`.
    fn stage(&mut self) -> Result<Stage, ParseError> {
        let at = self.at();
        let Some(Token::Word(name)) = self.next() else {
            self.pos -= 1;
            return self
                .err("expected a pipeline stage, e.g. count() > 2 or select(span.http.url)");
        };
        let fail = |message: String| Err(ParseError { at, message });
        let aggregate = AGGREGATES.contains(&name.as_str());
        if !aggregate && name != "select" {
            return match name.as_str() {
                "by" | "coalesce" => fail(format!("{name}() is not supported")),
                "rate"
                | "count_over_time"
                | "min_over_time"
                | "max_over_time"
                | "avg_over_time"
                | "sum_over_time"
                | "quantile_over_time"
                | "histogram_over_time" => fail(format!(
                    "{name}() is a metrics function: send the query to /api/metrics/query_range"
                )),
                _ => fail(format!(
                    "unknown pipeline stage {name:?}: count, avg, min, max, sum (compared, e.g. count() > 2) and select(...) are supported"
                )),
            };
        }
        let mut fields = self.fields(&name)?;
        if name == "select" {
            if fields.is_empty() {
                return fail("select() needs at least one field".into());
            }
            return Ok(Stage::Select(fields));
        }
        let aggregate = match (name.as_str(), fields.len()) {
            ("count", 0) => Aggregate::Count,
            ("count", _) => return fail("count() takes no argument".into()),
            (_, 1) => {
                let (word, f) = fields.pop().expect("one field");
                if !matches!(
                    f,
                    Field::Duration
                        | Field::SpanAttr(_)
                        | Field::ResourceAttr(_)
                        | Field::AnyAttr(_)
                ) {
                    return fail(format!(
                        "{name}() aggregates duration or a numeric attribute, not {word:?}"
                    ));
                }
                match name.as_str() {
                    "avg" => Aggregate::Avg(f),
                    "min" => Aggregate::Min(f),
                    "max" => Aggregate::Max(f),
                    _ => Aggregate::Sum(f),
                }
            }
            _ => return fail(format!("{name}() takes one field, e.g. {name}(duration)")),
        };
        let op = match self.next() {
            Some(Token::Eq) => Op::Eq,
            Some(Token::Ne) => Op::Ne,
            Some(Token::Gt) => Op::Gt,
            Some(Token::Ge) => Op::Ge,
            Some(Token::Lt) => Op::Lt,
            Some(Token::Le) => Op::Le,
            _ => {
                self.pos -= 1;
                return self.err(format!(
                    "expected a comparison after {name}(...), e.g. {name}(...) > 2"
                ));
            }
        };
        let at = self.at();
        let value = match self.next() {
            Some(Token::Word(w)) => match literal(&w) {
                Some(v @ (Literal::Int(_) | Literal::Float(_) | Literal::Duration(_))) => v,
                _ => {
                    return Err(ParseError {
                        at,
                        message: format!("{w:?} is not a number or duration"),
                    });
                }
            },
            _ => {
                self.pos -= 1;
                return self.err("expected a number or duration");
            }
        };
        Ok(Stage::Filter {
            aggregate,
            op,
            value,
        })
    }

    /// `name(args)` of a metrics function.
    fn function(&mut self) -> Result<Function, ParseError> {
        let at = self.at();
        let Some(Token::Word(name)) = self.next() else {
            self.pos -= 1;
            return self.err("expected a metrics function, e.g. rate()");
        };
        self.expect(Token::LParen, &format!("'(' after {name}"))?;
        let mut args: Vec<(usize, String)> = Vec::new();
        if self.peek() == Some(&Token::RParen) {
            self.pos += 1;
        } else {
            loop {
                let at = self.at();
                match self.next() {
                    Some(Token::Word(w)) => args.push((at, w)),
                    _ => {
                        self.pos -= 1;
                        return self.err(format!("expected an argument of {name}"));
                    }
                }
                match self.next() {
                    Some(Token::Comma) => continue,
                    Some(Token::RParen) => break,
                    _ => {
                        self.pos -= 1;
                        return self.err(format!("expected ',' or ')' in {name}(...)"));
                    }
                }
            }
        }
        let fail = |at: usize, message: String| ParseError { at, message };
        let measured = |args: &[(usize, String)]| -> Result<Field, ParseError> {
            let Some((at, word)) = args.first() else {
                return Err(fail(
                    at,
                    format!("{name} needs a field, e.g. {name}(duration)"),
                ));
            };
            match field(word) {
                Some(
                    f @ (Field::Duration
                    | Field::SpanAttr(_)
                    | Field::ResourceAttr(_)
                    | Field::AnyAttr(_)),
                ) => Ok(f),
                _ => Err(fail(
                    *at,
                    format!("{name} measures duration or a numeric attribute, not {word:?}"),
                )),
            }
        };
        let one = |args: &[(usize, String)]| -> Result<Field, ParseError> {
            if let Some((at, _)) = args.get(1) {
                return Err(fail(*at, format!("{name} takes one argument")));
            }
            measured(args)
        };
        Ok(match name.as_str() {
            "rate" | "count_over_time" => {
                if let Some((at, _)) = args.first() {
                    return Err(fail(*at, format!("{name}() takes no argument")));
                }
                if name == "rate" {
                    Function::Rate
                } else {
                    Function::CountOverTime
                }
            }
            "min_over_time" => Function::MinOverTime(one(&args)?),
            "max_over_time" => Function::MaxOverTime(one(&args)?),
            "avg_over_time" => Function::AvgOverTime(one(&args)?),
            "sum_over_time" => Function::SumOverTime(one(&args)?),
            "histogram_over_time" => Function::HistogramOverTime(one(&args)?),
            "quantile_over_time" => {
                let f = measured(&args)?;
                if args.len() < 2 {
                    return Err(fail(
                        self.at(),
                        "quantile_over_time needs quantiles, e.g. quantile_over_time(duration, .5, .99)".into(),
                    ));
                }
                let mut qs = Vec::new();
                for (at, w) in &args[1..] {
                    match w.parse::<f64>() {
                        Ok(q) if (0.0..=1.0).contains(&q) => qs.push(q),
                        _ => {
                            return Err(fail(
                                *at,
                                format!("a quantile is a number from 0 to 1, not {w:?}"),
                            ));
                        }
                    }
                }
                Function::QuantileOverTime(f, qs)
            }
            "compare" | "topk" | "bottomk" | "avg" | "sum" | "min" | "max" | "count" => {
                return Err(fail(
                    at,
                    format!("{name}() is not supported in metrics queries"),
                ));
            }
            _ => {
                return Err(fail(
                    at,
                    format!(
                        "unknown metrics function {name:?}: rate, count_over_time, min_over_time, max_over_time, avg_over_time, sum_over_time, quantile_over_time and histogram_over_time are supported"
                    ),
                ));
            }
        })
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
            let relation = match self.peek() {
                Some(Token::Gt) => Relation::plain(RelationKind::Child),
                Some(Token::Descendant) => Relation::plain(RelationKind::Descendant),
                Some(Token::Lt) => Relation::plain(RelationKind::Parent),
                // Between spansets `!~` is "not a sibling of".
                Some(Token::NotMatch) => Relation {
                    kind: RelationKind::Sibling,
                    mode: RelationMode::Not,
                },
                Some(Token::Rel(r)) => *r,
                _ => return Ok(left),
            };
            self.pos += 1;
            let right = self.spanset()?;
            left = Query::Structural(relation, Box::new(left), Box::new(right));
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
        "nil" => return Some(Literal::Nil),
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
    parse_nanos(word).ok().map(Literal::Duration)
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
    if p.peek() == Some(&Token::Pipe) {
        return p.err(
            "a pipeline stage ('| ...') is not supported in a search: metrics functions such as rate() go to /api/metrics/query_range",
        );
    }
    if p.pos < p.tokens.len() {
        return p.err("unexpected text after the query");
    }
    Ok(q)
}

const AGGREGATES: [&str; 5] = ["count", "avg", "min", "max", "sum"];

/// Parses a TraceQL search: a spanset expression and its pipeline stages
/// (a bare aggregate filter, `count() > 2`, means `{ } | count() > 2`).
pub fn parse_pipeline(text: &str) -> Result<Pipeline, ParseError> {
    let tokens = tokenize(text)?;
    let mut p = Parser {
        tokens,
        pos: 0,
        len: text.len(),
    };
    let mut stages = Vec::new();
    let bare = matches!(p.peek(), Some(Token::Word(w)) if AGGREGATES.contains(&w.as_str()))
        && p.tokens.get(p.pos + 1).map(|(_, t)| t) == Some(&Token::LParen);
    let query = if bare {
        stages.push(p.stage()?);
        Query::Spanset(Cond::True)
    } else {
        p.query()?
    };
    while p.peek() == Some(&Token::Pipe) {
        p.pos += 1;
        stages.push(p.stage()?);
    }
    if p.peek() == Some(&Token::Word("with".into())) {
        return p.err("with (...) hints are not supported");
    }
    if p.pos < p.tokens.len() {
        return p.err("unexpected text after the query");
    }
    Ok(Pipeline { query, stages })
}

/// A TraceQL metrics query: `{ filter } | function(...) [by (...)]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Metrics {
    pub filter: Query,
    pub function: Function,
    /// The `by (...)` fields with their text as written (the series'
    /// label names), in order.
    pub by: Vec<(String, Field)>,
}

/// The metrics functions (Tempo's names).
#[derive(Debug, Clone, PartialEq)]
pub enum Function {
    Rate,
    CountOverTime,
    MinOverTime(Field),
    MaxOverTime(Field),
    AvgOverTime(Field),
    SumOverTime(Field),
    /// The field and the quantiles (0 to 1), in the order given.
    QuantileOverTime(Field, Vec<f64>),
    HistogramOverTime(Field),
}

impl Function {
    /// Tempo's name of the function (the `__name__` of an ungrouped series).
    pub fn name(&self) -> &'static str {
        match self {
            Function::Rate => "rate",
            Function::CountOverTime => "count_over_time",
            Function::MinOverTime(_) => "min_over_time",
            Function::MaxOverTime(_) => "max_over_time",
            Function::AvgOverTime(_) => "avg_over_time",
            Function::SumOverTime(_) => "sum_over_time",
            Function::QuantileOverTime(..) => "quantile_over_time",
            Function::HistogramOverTime(_) => "histogram_over_time",
        }
    }

    /// The field measured, if the function takes one.
    pub fn field(&self) -> Option<&Field> {
        match self {
            Function::Rate | Function::CountOverTime => None,
            Function::MinOverTime(f)
            | Function::MaxOverTime(f)
            | Function::AvgOverTime(f)
            | Function::SumOverTime(f)
            | Function::QuantileOverTime(f, _)
            | Function::HistogramOverTime(f) => Some(f),
        }
    }
}

/// Parses a TraceQL metrics query.
pub fn parse_metrics(text: &str) -> Result<Metrics, ParseError> {
    let tokens = tokenize(text)?;
    let mut p = Parser {
        tokens,
        pos: 0,
        len: text.len(),
    };
    let filter = p.query()?;
    p.expect(
        Token::Pipe,
        "'|' and a metrics function after the spanset filter, e.g. {} | rate()",
    )?;
    let function = p.function()?;
    let mut by = Vec::new();
    if p.peek() == Some(&Token::Word("by".into())) {
        p.pos += 1;
        let at = p.at();
        by = p.fields("by")?;
        if by.is_empty() {
            return Err(ParseError {
                at,
                message: "by() needs an attribute or intrinsic to group by".into(),
            });
        }
    }
    match p.peek() {
        None => Ok(Metrics {
            filter,
            function,
            by,
        }),
        Some(Token::Word(w)) if w == "with" || w == "topk" || w == "bottomk" => {
            p.err(format!("{w} is not supported"))
        }
        Some(Token::Pipe) => {
            p.err("a second pipeline stage after the metrics function is not supported")
        }
        Some(_) => p.err("unexpected text after the metrics function"),
    }
}

impl Query {
    /// The spanset conditions, left to right.
    pub fn spansets(&self) -> Vec<&Cond> {
        match self {
            Query::Spanset(c) => vec![c],
            Query::And(a, b) | Query::Or(a, b) | Query::Structural(_, a, b) => {
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
}

/// Why legacy search tags could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tags: {0}")]
pub struct TagsError(String);

/// Tempo's legacy search `tags` (logfmt `k=v k2="v 2"`) as the TraceQL
/// spanset they mean: case-insensitive substring matches on one span;
/// `name` and `status` are the intrinsics.
pub fn legacy_tags(text: &str) -> Result<Query, TagsError> {
    let mut cond = Cond::True;
    let mut rest = text.trim();
    while !rest.is_empty() {
        let (key, after) = rest
            .split_once('=')
            .ok_or_else(|| TagsError(format!("{rest:?} is not key=value")))?;
        let (value, tail) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted
                .find('"')
                .ok_or_else(|| TagsError("unterminated quoted value".into()))?;
            (&quoted[..end], &quoted[end + 1..])
        } else {
            after.split_once(' ').unwrap_or((after, ""))
        };
        let key = key.trim();
        let cmp = match key {
            "name" => Cmp {
                field: Field::Name,
                op: Op::Match,
                value: Literal::Str(format!("(?i).*{}.*", regex::escape(value))),
            },
            "status" | "status.code" => Cmp {
                field: Field::Status,
                op: Op::Eq,
                value: Literal::Keyword(
                    value
                        .trim_start_matches("STATUS_CODE_")
                        .to_ascii_lowercase(),
                ),
            },
            _ => Cmp {
                field: Field::AnyAttr(key.to_string()),
                op: Op::Match,
                value: Literal::Str(format!("(?i).*{}.*", regex::escape(value))),
            },
        };
        cond = match cond {
            Cond::True => Cond::Cmp(cmp),
            c => Cond::And(Box::new(c), Box::new(Cond::Cmp(cmp))),
        };
        rest = tail.trim();
    }
    Ok(Query::Spanset(cond))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmp(field: Field, op: Op, value: Literal) -> Cond {
        Cond::Cmp(Cmp { field, op, value })
    }

    fn and(a: Cond, b: Cond) -> Cond {
        Cond::And(Box::new(a), Box::new(b))
    }

    #[test]
    fn parses_what_grafana_builds() {
        let q = parse(r#"{resource.service.name="frontend" && name="GET /" && duration>100ms}"#)
            .unwrap();
        assert_eq!(
            q,
            Query::Spanset(and(
                and(
                    cmp(
                        Field::ResourceAttr("service.name".into()),
                        Op::Eq,
                        Literal::Str("frontend".into())
                    ),
                    cmp(Field::Name, Op::Eq, Literal::Str("GET /".into())),
                ),
                cmp(Field::Duration, Op::Gt, Literal::Duration(100_000_000)),
            ))
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
        let Query::Structural(
            Relation {
                kind: RelationKind::Descendant,
                mode: RelationMode::Plain,
            },
            a,
            b,
        ) = &q
        else {
            panic!("{q:?}")
        };
        let Query::Spanset(a) = a.as_ref() else {
            panic!()
        };
        let mut span_level = Vec::new();
        a.span_comparisons(&mut span_level);
        let fields: Vec<(&Field, Op, &Literal)> = span_level
            .iter()
            .map(|c| (&c.field, c.op, &c.value))
            .collect();
        assert_eq!(
            fields,
            vec![
                (
                    &Field::SpanAttr("http.status_code".into()),
                    Op::Ge,
                    &Literal::Int(500)
                ),
                (&Field::Status, Op::Eq, &Literal::Keyword("error".into())),
                (
                    &Field::AnyAttr("region".into()),
                    Op::Match,
                    &Literal::Str("eu-.*".into())
                ),
                (&Field::Kind, Op::Eq, &Literal::Keyword("server".into())),
                (
                    &Field::SpanAttr("a b".into()),
                    Op::Ne,
                    &Literal::Str("x".into())
                ),
                (&Field::EventName, Op::Eq, &Literal::Str("exception".into())),
            ]
        );
        let Query::Spanset(b) = b.as_ref() else {
            panic!()
        };
        let mut span_level = Vec::new();
        b.span_comparisons(&mut span_level);
        assert!(span_level.is_empty(), "{span_level:?}");
        assert_eq!(
            *b,
            and(
                cmp(
                    Field::TraceDuration,
                    Op::Gt,
                    Literal::Duration(1_500_000_000)
                ),
                cmp(Field::RootService, Op::Eq, Literal::Str("api".into())),
            )
        );
        assert_eq!(q.spansets().len(), 2);
        let q = parse(r#"{name="a"} && {name="b"} || {name="c"} > {name="d"}"#).unwrap();
        assert!(
            matches!(q, Query::Or(ref l, ref r) if matches!(**l, Query::And(..)) && matches!(**r, Query::Structural(r, ..) if r == Relation::plain(RelationKind::Child)))
        );
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

    #[test]
    fn metrics_queries_parse() {
        let m = parse_metrics(
            r#"{ resource.service.name = "cart" && status = error } | quantile_over_time(duration, .5, 0.9, 1) by (span.http.route, name)"#,
        )
        .unwrap();
        assert_eq!(
            m.function,
            Function::QuantileOverTime(Field::Duration, vec![0.5, 0.9, 1.0])
        );
        assert_eq!(
            m.by,
            vec![
                (
                    "span.http.route".to_string(),
                    Field::SpanAttr("http.route".into())
                ),
                ("name".to_string(), Field::Name),
            ]
        );
        assert_eq!(m.filter.spansets().len(), 1);
        let m = parse_metrics("{} | rate()").unwrap();
        assert_eq!((m.function, m.by), (Function::Rate, vec![]));
        let m =
            parse_metrics("{ kind = server } | avg_over_time(span.size) by(resource.env)").unwrap();
        assert_eq!(
            m.function,
            Function::AvgOverTime(Field::SpanAttr("size".into()))
        );
        assert_eq!(m.by[0].1, Field::ResourceAttr("env".into()));
        for (q, needle) in [
            ("{}", "'|'"),
            ("{} | ", "expected a metrics function"),
            ("{} | rate", "'(' after rate"),
            ("{} | rate(duration)", "takes no argument"),
            ("{} | avg_over_time()", "needs a field"),
            (
                "{} | avg_over_time(name)",
                "measures duration or a numeric attribute",
            ),
            ("{} | quantile_over_time(duration)", "needs quantiles"),
            ("{} | quantile_over_time(duration, 1.5)", "from 0 to 1"),
            (
                "{} | median_over_time(duration)",
                "unknown metrics function",
            ),
            ("{} | count() > 2", "not supported in metrics queries"),
            ("{} | rate() by (foo)", "unknown field"),
            ("{} | rate() by (name", "expected ',' or ')'"),
            ("{} | rate() with (exemplars=true)", "with is not supported"),
            ("{} | rate() | topk(3)", "second pipeline stage"),
        ] {
            let e = parse_metrics(q).unwrap_err().to_string();
            assert!(e.contains(needle), "{q}: {e}");
        }
        let e = parse("{} | rate()").unwrap_err().to_string();
        assert!(e.contains("/api/metrics/query_range"), "{e}");
    }

    #[test]
    fn structural_operators_and_pipelines_parse() {
        use RelationKind as K;
        use RelationMode as M;
        for (op, kind, mode) in [
            (">", K::Child, M::Plain),
            (">>", K::Descendant, M::Plain),
            ("<", K::Parent, M::Plain),
            ("<<", K::Ancestor, M::Plain),
            ("~", K::Sibling, M::Plain),
            ("!>", K::Child, M::Not),
            ("!>>", K::Descendant, M::Not),
            ("!<", K::Parent, M::Not),
            ("!<<", K::Ancestor, M::Not),
            ("!~", K::Sibling, M::Not),
            ("&>", K::Child, M::Union),
            ("&>>", K::Descendant, M::Union),
            ("&<", K::Parent, M::Union),
            ("&<<", K::Ancestor, M::Union),
            ("&~", K::Sibling, M::Union),
        ] {
            let q = parse(&format!(r#"{{ name = "a" }} {op} {{ .x !~ "b.*" }}"#)).unwrap();
            let Query::Structural(r, _, b) = &q else {
                panic!("{op}: {q:?}")
            };
            assert_eq!((r.kind, r.mode), (kind, mode), "{op}");
            // Inside a spanset `!~` is still "does not match".
            assert!(
                matches!(
                    **b,
                    Query::Spanset(Cond::Cmp(Cmp {
                        op: Op::NotMatch,
                        ..
                    }))
                ),
                "{op}"
            );
        }
        let p = parse_pipeline(
            r#"{ status = error } | count() > 2 | avg(duration) >= 20ms | select(span.http.url, name)"#,
        )
        .unwrap();
        assert_eq!(
            p.stages,
            vec![
                Stage::Filter {
                    aggregate: Aggregate::Count,
                    op: Op::Gt,
                    value: Literal::Int(2)
                },
                Stage::Filter {
                    aggregate: Aggregate::Avg(Field::Duration),
                    op: Op::Ge,
                    value: Literal::Duration(20_000_000)
                },
                Stage::Select(vec![
                    ("span.http.url".into(), Field::SpanAttr("http.url".into())),
                    ("name".into(), Field::Name),
                ]),
            ]
        );
        let p = parse_pipeline("sum(span.bytes) > 1.5").unwrap();
        assert_eq!(p.query, Query::Spanset(Cond::True));
        assert_eq!(p.stages.len(), 1);
        for (q, needle) in [
            ("{ } | by(name)", "by() is not supported"),
            ("{ } | rate()", "metrics function"),
            ("{ } | count(duration) > 1", "takes no argument"),
            ("{ } | avg() > 1", "takes one field"),
            ("{ } | avg(kind) > 1", "aggregates duration"),
            ("{ } | count() >", "expected a number"),
            ("{ } | count() > \"x\"", "expected a number"),
            ("{ } | count() =~ 1", "expected a comparison"),
            ("{ } | select()", "at least one field"),
            ("{ } | select(nope)", "unknown field"),
            ("{ } | nope()", "unknown pipeline stage"),
            ("{ } |", "expected a pipeline stage"),
        ] {
            let e = parse_pipeline(q).unwrap_err().to_string();
            assert!(e.contains(needle), "{q}: {e}");
        }
    }

    /// Found by fuzzing: a backslash before a character of several bytes
    /// made the tokenizer slice inside it and panic.
    #[test]
    fn an_escaped_multibyte_character_is_that_character() {
        assert_eq!(
            parse("{ .a = \"x\\ڛy\" }").unwrap(),
            Query::Spanset(Cond::Cmp(Cmp {
                field: Field::AnyAttr("a".into()),
                op: Op::Eq,
                value: Literal::Str("xڛy".into()),
            }))
        );
        // The fuzzer's input: refused with a position, no panic.
        let input = "{ ts\"exentakk_((( \\.\\n\\ڛ =rue &\\ \\n\\n\\&\\ = 0 \\.\\n\\&\\ =rue 0.5 }";
        let e = parse(input).unwrap_err();
        assert!(e.at <= input.len(), "{e}");
    }
}
