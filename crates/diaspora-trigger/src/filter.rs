//! The metadata filter language: which events a trigger acts on.
//!
//! ```text
//! expr     := or
//! or       := and ("or" and)*
//! and      := unary ("and" unary)*
//! unary    := "not" unary | primary
//! primary  := "(" expr ")" | "true" | "false" | "has" "(" field ")"
//!           | field op literal                 op: == != < <= > >=
//!           | field "in" interval              [lo, hi]  [lo, hi)  (lo, hi]  (lo, hi)
//!           | field "in" "{" literal ("," literal)* "}"
//! field    := name | `quoted name`             name: [A-Za-z_@][A-Za-z0-9_.@/:-]*
//! literal  := integer | float | "string" | true | false
//! ```
//!
//! Fields are an event's metadata keys (`scan.kind`, `energy_kev`); on a
//! fabric item `@key`, `@timestamp_us` and `@payload_len` name its key,
//! timestamp and payload length. Strings take the escapes `\" \\ \n \r \t`
//! and `\u{HEX}`.
//!
//! Meaning:
//! - Integers and floats compare as numbers (an integer against a float as
//!   `f64`); strings by their bytes; `false < true`.
//! - A comparison, range or set test of a field the event lacks, or whose
//!   value has another type (a string against a number, raw bytes), is
//!   **false** — `!=` included. `not (f == x)` is true for an event
//!   without `f`; `f != x` is not.
//! - Intervals are numeric; `[` and `]` include their bound, `(` and `)`
//!   exclude it.
//!
//! Bad expressions are refused with the column (1-based, in characters) of
//! the first thing wrong and what was expected there. Limits: an
//! expression of at most [`TEXT_MAX`] bytes, nesting at most [`DEPTH_MAX`]
//! deep, a set of at most [`SET_MAX`] values.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::fmt;

/// The longest expression accepted, bytes.
pub const TEXT_MAX: usize = 16 * 1024;
/// The deepest nesting accepted (parentheses and `not`).
pub const DEPTH_MAX: usize = 64;
/// The most values in one `in { … }` set.
pub const SET_MAX: usize = 1024;

/// A metadata value as the filter sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A string.
    Str(String),
    /// Raw bytes (only `has` sees them).
    Bytes(Vec<u8>),
}

/// What a filter reads an event's fields from.
pub trait Fields {
    /// The value of `name`, if the event has it.
    fn field(&self, name: &str) -> Option<Value>;
}

impl Fields for BTreeMap<String, Value> {
    fn field(&self, name: &str) -> Option<Value> {
        self.get(name).cloned()
    }
}

impl<S: std::hash::BuildHasher> Fields for HashMap<String, Value, S> {
    fn field(&self, name: &str) -> Option<Value> {
        self.get(name).cloned()
    }
}

/// A fabric item: its metadata, and `@key`, `@timestamp_us`, `@payload_len`.
impl Fields for diaspora_proto::v1::Item {
    fn field(&self, name: &str) -> Option<Value> {
        use diaspora_proto::v1::value::Kind;
        match name {
            "@key" => Some(match std::str::from_utf8(&self.key) {
                Ok(s) => Value::Str(s.to_string()),
                Err(_) => Value::Bytes(self.key.to_vec()),
            }),
            "@timestamp_us" => Some(Value::Int(self.timestamp_us)),
            "@payload_len" => Some(Value::Int(self.payload.len() as i64)),
            _ => match self.metadata.get(name)?.kind.as_ref()? {
                Kind::I(i) => Some(Value::Int(*i)),
                Kind::F(f) => Some(Value::Float(*f)),
                Kind::B(b) => Some(Value::Bool(*b)),
                Kind::S(s) => Some(Value::Str(s.clone())),
                Kind::Raw(r) => Some(Value::Bytes(r.to_vec())),
            },
        }
    }
}

/// A literal in an expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Lit {
    /// An integer.
    Int(i64),
    /// A float (finite).
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A string.
    Str(String),
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl CmpOp {
    fn text(self) -> &'static str {
        match self {
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }

    fn holds(self, o: Ordering) -> bool {
        match self {
            CmpOp::Eq => o == Ordering::Equal,
            CmpOp::Ne => o != Ordering::Equal,
            CmpOp::Lt => o == Ordering::Less,
            CmpOp::Le => o != Ordering::Greater,
            CmpOp::Gt => o == Ordering::Greater,
            CmpOp::Ge => o != Ordering::Less,
        }
    }
}

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// `true` / `false`.
    Const(bool),
    /// `has(field)`.
    Has(String),
    /// `field op literal`.
    Cmp {
        /// The field.
        field: String,
        /// The operator.
        op: CmpOp,
        /// The literal.
        value: Lit,
    },
    /// `field in [lo, hi)` and its kin (numeric bounds).
    Range {
        /// The field.
        field: String,
        /// Lower bound.
        lo: Lit,
        /// Whether `lo` is included.
        lo_inclusive: bool,
        /// Upper bound.
        hi: Lit,
        /// Whether `hi` is included.
        hi_inclusive: bool,
    },
    /// `field in {a, b, …}`.
    Set {
        /// The field.
        field: String,
        /// The values.
        values: Vec<Lit>,
    },
    /// `not e`.
    Not(Box<Expr>),
    /// `a and b and …` (two or more).
    And(Vec<Expr>),
    /// `a or b or …` (two or more).
    Or(Vec<Expr>),
}

/// A bad expression: where (column, 1-based, in characters) and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("filter: column {column}: {message}")]
pub struct ParseError {
    /// The column of the first thing wrong (1-based, characters).
    pub column: usize,
    /// What was wrong, or expected there.
    pub message: String,
}

impl ParseError {
    /// The error under the expression, with a caret at its column.
    pub fn render(&self, text: &str) -> String {
        format!(
            "{text}\n{}^ {}",
            " ".repeat(self.column.saturating_sub(1)),
            self.message
        )
    }
}

/// A compiled filter.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    expr: Expr,
}

impl Filter {
    /// Parses an expression.
    pub fn parse(text: &str) -> Result<Filter, ParseError> {
        if text.len() > TEXT_MAX {
            return Err(ParseError {
                column: 1,
                message: format!("the expression is {} bytes; at most {TEXT_MAX}", text.len()),
            });
        }
        let tokens = lex(text)?;
        let mut p = Parser {
            tokens,
            at: 0,
            depth: 0,
            end_column: text.chars().count() + 1,
        };
        let expr = p.or()?;
        match p.peek() {
            None => Ok(Filter { expr }),
            Some(t) => Err(p.error_at(
                t.column,
                format!(
                    "expected `and`, `or` or the end, found {}",
                    t.tok.describe()
                ),
            )),
        }
    }

    /// A filter of an expression built directly.
    pub fn from_expr(expr: Expr) -> Filter {
        Filter { expr }
    }

    /// Its expression.
    pub fn expr(&self) -> &Expr {
        &self.expr
    }

    /// Whether an event with these fields matches.
    pub fn matches(&self, fields: &impl Fields) -> bool {
        eval(&self.expr, fields)
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.expr.fmt(f)
    }
}

fn eval(e: &Expr, fields: &impl Fields) -> bool {
    match e {
        Expr::Const(b) => *b,
        Expr::Has(f) => fields.field(f).is_some(),
        Expr::Cmp { field, op, value } => fields
            .field(field)
            .and_then(|v| compare(&v, value))
            .is_some_and(|o| op.holds(o)),
        Expr::Range {
            field,
            lo,
            lo_inclusive,
            hi,
            hi_inclusive,
        } => {
            let Some(v) = fields.field(field) else {
                return false;
            };
            if !matches!(v, Value::Int(_) | Value::Float(_)) {
                return false;
            }
            let above = compare(&v, lo)
                .is_some_and(|o| o == Ordering::Greater || (*lo_inclusive && o == Ordering::Equal));
            let below = compare(&v, hi)
                .is_some_and(|o| o == Ordering::Less || (*hi_inclusive && o == Ordering::Equal));
            above && below
        }
        Expr::Set { field, values } => match fields.field(field) {
            None => false,
            Some(v) => values
                .iter()
                .any(|l| compare(&v, l) == Some(Ordering::Equal)),
        },
        Expr::Not(e) => !eval(e, fields),
        Expr::And(es) => es.iter().all(|e| eval(e, fields)),
        Expr::Or(es) => es.iter().any(|e| eval(e, fields)),
    }
}

/// How a value compares with a literal; `None` when they cannot be
/// compared (other types, raw bytes, NaN).
pub fn compare(v: &Value, l: &Lit) -> Option<Ordering> {
    match (v, l) {
        (Value::Int(a), Lit::Int(b)) => Some(a.cmp(b)),
        (Value::Int(a), Lit::Float(b)) => (*a as f64).partial_cmp(b),
        (Value::Float(a), Lit::Int(b)) => a.partial_cmp(&(*b as f64)),
        (Value::Float(a), Lit::Float(b)) => a.partial_cmp(b),
        (Value::Bool(a), Lit::Bool(b)) => Some(a.cmp(b)),
        (Value::Str(a), Lit::Str(b)) => Some(a.as_bytes().cmp(b.as_bytes())),
        _ => None,
    }
}

// ---------------------------------------------------------------- printing

const KEYWORDS: [&str; 6] = ["and", "or", "not", "in", "has", "true"];

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == '@'
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '@' | '/' | ':' | '-')
}

fn is_bare_name(s: &str) -> bool {
    let mut cs = s.chars();
    cs.next().is_some_and(is_name_start)
        && cs.all(is_name_char)
        && !KEYWORDS.contains(&s)
        && s != "false"
}

struct FieldText<'a>(&'a str);

impl fmt::Display for FieldText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if is_bare_name(self.0) {
            return f.write_str(self.0);
        }
        f.write_str("`")?;
        for c in self.0.chars() {
            match c {
                '`' => f.write_str("\\`")?,
                '\\' => f.write_str("\\\\")?,
                c if c.is_control() => write!(f, "\\u{{{:x}}}", c as u32)?,
                c => write!(f, "{c}")?,
            }
        }
        f.write_str("`")
    }
}

impl fmt::Display for Lit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Lit::Int(i) => write!(f, "{i}"),
            // `{:?}` keeps a decimal point or an exponent: it reads back a float.
            Lit::Float(x) => write!(f, "{x:?}"),
            Lit::Bool(b) => write!(f, "{b}"),
            Lit::Str(s) => {
                f.write_str("\"")?;
                for c in s.chars() {
                    match c {
                        '"' => f.write_str("\\\"")?,
                        '\\' => f.write_str("\\\\")?,
                        '\n' => f.write_str("\\n")?,
                        '\r' => f.write_str("\\r")?,
                        '\t' => f.write_str("\\t")?,
                        c if c.is_control() => write!(f, "\\u{{{:x}}}", c as u32)?,
                        c => write!(f, "{c}")?,
                    }
                }
                f.write_str("\"")
            }
        }
    }
}

/// The canonical text: it parses back to the same expression.
impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Const(b) => write!(f, "{b}"),
            Expr::Has(field) => write!(f, "has({})", FieldText(field)),
            Expr::Cmp { field, op, value } => {
                write!(f, "{} {} {value}", FieldText(field), op.text())
            }
            Expr::Range {
                field,
                lo,
                lo_inclusive,
                hi,
                hi_inclusive,
            } => write!(
                f,
                "{} in {}{lo}, {hi}{}",
                FieldText(field),
                if *lo_inclusive { '[' } else { '(' },
                if *hi_inclusive { ']' } else { ')' }
            ),
            Expr::Set { field, values } => {
                write!(f, "{} in {{", FieldText(field))?;
                for (i, v) in values.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_str("}")
            }
            Expr::Not(e) => write!(f, "not {e}"),
            Expr::And(es) | Expr::Or(es) => {
                let word = if matches!(self, Expr::And(_)) {
                    " and "
                } else {
                    " or "
                };
                f.write_str("(")?;
                for (i, e) in es.iter().enumerate() {
                    if i > 0 {
                        f.write_str(word)?;
                    }
                    write!(f, "{e}")?;
                }
                f.write_str(")")
            }
        }
    }
}

// ------------------------------------------------------------------ lexing

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Name(String),
    Word(&'static str),
    Int(i64),
    Float(f64),
    Str(String),
    Op(CmpOp),
    Punct(char),
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Name(n) => format!("field `{n}`"),
            Tok::Word(w) => format!("`{w}`"),
            Tok::Int(i) => format!("number {i}"),
            Tok::Float(x) => format!("number {x:?}"),
            Tok::Str(_) => "a string".into(),
            Tok::Op(o) => format!("`{}`", o.text()),
            Tok::Punct(c) => format!("`{c}`"),
        }
    }
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    column: usize,
}

fn lex(text: &str) -> Result<Vec<Token>, ParseError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let err = |i: usize, message: String| ParseError {
        column: i + 1,
        message,
    };
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let tok = if is_name_start(c) {
            while i < chars.len() && is_name_char(chars[i]) {
                i += 1;
            }
            let name: String = chars[start..i].iter().collect();
            match name.as_str() {
                "and" => Tok::Word("and"),
                "or" => Tok::Word("or"),
                "not" => Tok::Word("not"),
                "in" => Tok::Word("in"),
                "has" => Tok::Word("has"),
                "true" => Tok::Word("true"),
                "false" => Tok::Word("false"),
                _ => Tok::Name(name),
            }
        } else if c == '`' || c == '"' {
            i += 1;
            let mut s = String::new();
            loop {
                let Some(&d) = chars.get(i) else {
                    return Err(err(
                        start,
                        format!(
                            "this {} is not closed",
                            if c == '"' { "string" } else { "quoted field" }
                        ),
                    ));
                };
                i += 1;
                if d == c {
                    break;
                }
                if d != '\\' {
                    s.push(d);
                    continue;
                }
                let Some(&e) = chars.get(i) else {
                    return Err(err(i - 1, "an escape at the end".into()));
                };
                i += 1;
                match e {
                    '"' | '`' | '\\' => s.push(e),
                    'n' => s.push('\n'),
                    'r' => s.push('\r'),
                    't' => s.push('\t'),
                    'u' => {
                        let open = i;
                        if chars.get(i) != Some(&'{') {
                            return Err(err(i - 2, "`\\u` must be followed by `{HEX}`".into()));
                        }
                        let close = chars[i..]
                            .iter()
                            .take(8)
                            .position(|&x| x == '}')
                            .map(|p| i + p)
                            .ok_or_else(|| {
                                err(open - 2, "`\\u{` without its `}` (1–6 hex digits)".into())
                            })?;
                        let hex: String = chars[i + 1..close].iter().collect();
                        let ch = u32::from_str_radix(&hex, 16)
                            .ok()
                            .filter(|_| !hex.is_empty() && hex.len() <= 6)
                            .and_then(char::from_u32)
                            .ok_or_else(|| {
                                err(open - 2, format!("`\\u{{{hex}}}` is not a character"))
                            })?;
                        s.push(ch);
                        i = close + 1;
                    }
                    other => {
                        return Err(err(
                            i - 2,
                            format!(
                                "unknown escape `\\{other}` (\\\" \\` \\\\ \\n \\r \\t \\u{{HEX}})"
                            ),
                        ))
                    }
                }
            }
            if c == '"' {
                Tok::Str(s)
            } else if s.is_empty() {
                return Err(err(start, "an empty quoted field".into()));
            } else {
                Tok::Name(s)
            }
        } else if c.is_ascii_digit()
            || (c == '-' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit()))
        {
            i += 1;
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            let mut float = false;
            if chars.get(i) == Some(&'.') && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit()) {
                float = true;
                i += 1;
                while i < chars.len() && chars[i].is_ascii_digit() {
                    i += 1;
                }
            }
            if matches!(chars.get(i), Some('e' | 'E')) {
                let mut j = i + 1;
                if matches!(chars.get(j), Some('+' | '-')) {
                    j += 1;
                }
                if chars.get(j).is_some_and(|d| d.is_ascii_digit()) {
                    float = true;
                    i = j;
                    while i < chars.len() && chars[i].is_ascii_digit() {
                        i += 1;
                    }
                }
            }
            if chars
                .get(i)
                .is_some_and(|&d| is_name_char(d) && d != '-' && d != ':')
            {
                return Err(err(i, format!("unexpected `{}` in a number", chars[i])));
            }
            let t: String = chars[start..i].iter().collect();
            if float {
                match t.parse::<f64>() {
                    Ok(x) if x.is_finite() => Tok::Float(x),
                    _ => return Err(err(start, format!("{t} is not a finite number"))),
                }
            } else {
                match t.parse::<i64>() {
                    Ok(n) => Tok::Int(n),
                    Err(_) => {
                        return Err(err(
                            start,
                            format!("{t} does not fit a 64-bit integer (write it as a float)"),
                        ))
                    }
                }
            }
        } else {
            let two: String = chars[i..chars.len().min(i + 2)].iter().collect();
            let (tok, len) = match two.as_str() {
                "==" => (Tok::Op(CmpOp::Eq), 2),
                "!=" => (Tok::Op(CmpOp::Ne), 2),
                "<=" => (Tok::Op(CmpOp::Le), 2),
                ">=" => (Tok::Op(CmpOp::Ge), 2),
                _ => match c {
                    '<' => (Tok::Op(CmpOp::Lt), 1),
                    '>' => (Tok::Op(CmpOp::Gt), 1),
                    '(' | ')' | '[' | ']' | '{' | '}' | ',' => (Tok::Punct(c), 1),
                    '=' => return Err(err(i, "`=` is not an operator: compare with `==`".into())),
                    '&' | '|' | '!' => {
                        return Err(err(
                            i,
                            format!("`{c}` is not an operator: use `and`, `or`, `not`"),
                        ))
                    }
                    _ => {
                        return Err(err(
                            i,
                            format!("unexpected character `{}`", c.escape_default()),
                        ))
                    }
                },
            };
            i += len;
            tok
        };
        out.push(Token {
            tok,
            column: start + 1,
        });
    }
    Ok(out)
}

// ----------------------------------------------------------------- parsing

struct Parser {
    tokens: Vec<Token>,
    at: usize,
    depth: usize,
    end_column: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.at).cloned();
        self.at += 1;
        t
    }

    fn column(&self) -> usize {
        self.peek().map_or(self.end_column, |t| t.column)
    }

    fn found(&self) -> String {
        self.peek()
            .map_or_else(|| "the end".to_string(), |t| t.tok.describe())
    }

    fn error_at(&self, column: usize, message: String) -> ParseError {
        ParseError { column, message }
    }

    fn expected(&self, what: &str) -> ParseError {
        self.error_at(
            self.column(),
            format!("expected {what}, found {}", self.found()),
        )
    }

    fn eat(&mut self, tok: &Tok) -> bool {
        if self.peek().is_some_and(|t| &t.tok == tok) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn deeper(&mut self) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > DEPTH_MAX {
            return Err(self.error_at(self.column(), format!("nested more than {DEPTH_MAX} deep")));
        }
        Ok(())
    }

    fn or(&mut self) -> Result<Expr, ParseError> {
        let mut es = vec![self.and()?];
        while self.eat(&Tok::Word("or")) {
            es.push(self.and()?);
        }
        Ok(if es.len() == 1 {
            es.pop().expect("one")
        } else {
            Expr::Or(es)
        })
    }

    fn and(&mut self) -> Result<Expr, ParseError> {
        let mut es = vec![self.unary()?];
        while self.eat(&Tok::Word("and")) {
            es.push(self.unary()?);
        }
        Ok(if es.len() == 1 {
            es.pop().expect("one")
        } else {
            Expr::And(es)
        })
    }

    fn unary(&mut self) -> Result<Expr, ParseError> {
        if self.eat(&Tok::Word("not")) {
            self.deeper()?;
            let e = self.unary()?;
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(e)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, ParseError> {
        let Some(t) = self.peek().cloned() else {
            return Err(self.expected("a condition"));
        };
        match t.tok {
            Tok::Punct('(') => {
                self.at += 1;
                self.deeper()?;
                let e = self.or()?;
                self.depth -= 1;
                if !self.eat(&Tok::Punct(')')) {
                    return Err(
                        self.expected(&format!("`)` closing the `(` at column {}", t.column))
                    );
                }
                Ok(e)
            }
            Tok::Word("true") => {
                self.at += 1;
                Ok(Expr::Const(true))
            }
            Tok::Word("false") => {
                self.at += 1;
                Ok(Expr::Const(false))
            }
            Tok::Word("has") => {
                self.at += 1;
                if !self.eat(&Tok::Punct('(')) {
                    return Err(self.expected("`(` after `has`"));
                }
                let field = self.field()?;
                if !self.eat(&Tok::Punct(')')) {
                    return Err(self.expected("`)` closing `has(`"));
                }
                Ok(Expr::Has(field))
            }
            Tok::Name(_) => {
                let field = self.field()?;
                self.condition(field)
            }
            _ => Err(self.expected("a condition (a field, `has(…)`, `not`, `(`, true or false)")),
        }
    }

    fn field(&mut self) -> Result<String, ParseError> {
        match self.peek().map(|t| &t.tok) {
            Some(Tok::Name(n)) => {
                let n = n.clone();
                self.at += 1;
                Ok(n)
            }
            _ => Err(self.expected("a field name")),
        }
    }

    fn condition(&mut self, field: String) -> Result<Expr, ParseError> {
        match self.peek().map(|t| t.tok.clone()) {
            Some(Tok::Op(op)) => {
                self.at += 1;
                let value = self.literal()?;
                Ok(Expr::Cmp { field, op, value })
            }
            Some(Tok::Word("in")) => {
                self.at += 1;
                let open = self.column();
                match self.next().map(|t| t.tok) {
                    Some(Tok::Punct('{')) => self.set(field),
                    Some(Tok::Punct(c @ ('[' | '('))) => {
                        let lo = self.number("the interval's lower bound")?;
                        if !self.eat(&Tok::Punct(',')) {
                            return Err(self.expected("`,` between the interval's bounds"));
                        }
                        let hi = self.number("the interval's upper bound")?;
                        let hi_inclusive = match self.next().map(|t| t.tok) {
                            Some(Tok::Punct(']')) => true,
                            Some(Tok::Punct(')')) => false,
                            _ => {
                                self.at -= 1;
                                return Err(self.expected(&format!(
                                    "`]` or `)` closing the interval opened at column {open}"
                                )));
                            }
                        };
                        Ok(Expr::Range {
                            field,
                            lo,
                            lo_inclusive: c == '[',
                            hi,
                            hi_inclusive,
                        })
                    }
                    _ => {
                        self.at -= 1;
                        Err(self.expected("`{` (a set) or `[`/`(` (an interval) after `in`"))
                    }
                }
            }
            _ => Err(self.expected(&format!(
                "a comparison (== != < <= > >=) or `in` after field `{field}`"
            ))),
        }
    }

    fn set(&mut self, field: String) -> Result<Expr, ParseError> {
        let mut values = Vec::new();
        if self.eat(&Tok::Punct('}')) {
            return Err(self.error_at(self.column(), "an empty set".into()));
        }
        loop {
            if values.len() == SET_MAX {
                return Err(self.error_at(
                    self.column(),
                    format!("a set of more than {SET_MAX} values"),
                ));
            }
            values.push(self.literal()?);
            if self.eat(&Tok::Punct('}')) {
                return Ok(Expr::Set { field, values });
            }
            if !self.eat(&Tok::Punct(',')) {
                return Err(self.expected("`,` or `}` in the set"));
            }
        }
    }

    fn number(&mut self, what: &str) -> Result<Lit, ParseError> {
        match self.peek().map(|t| &t.tok) {
            Some(Tok::Int(i)) => {
                let i = *i;
                self.at += 1;
                Ok(Lit::Int(i))
            }
            Some(Tok::Float(x)) => {
                let x = *x;
                self.at += 1;
                Ok(Lit::Float(x))
            }
            _ => Err(self.expected(&format!("a number for {what}"))),
        }
    }

    fn literal(&mut self) -> Result<Lit, ParseError> {
        let lit = match self.peek().map(|t| &t.tok) {
            Some(Tok::Int(i)) => Lit::Int(*i),
            Some(Tok::Float(x)) => Lit::Float(*x),
            Some(Tok::Str(s)) => Lit::Str(s.clone()),
            Some(Tok::Word("true")) => Lit::Bool(true),
            Some(Tok::Word("false")) => Lit::Bool(false),
            _ => return Err(self.expected("a value (a number, a \"string\", true or false)")),
        };
        self.at += 1;
        Ok(lit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(pairs: &[(&str, Value)]) -> BTreeMap<String, Value> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    fn m(expr: &str, e: &BTreeMap<String, Value>) -> bool {
        Filter::parse(expr)
            .unwrap_or_else(|err| panic!("{}", err.render(expr)))
            .matches(e)
    }

    #[test]
    fn comparisons_ranges_sets_and_presence() {
        let e = ev(&[
            ("scan", Value::Int(17)),
            ("energy_kev", Value::Float(6.5)),
            ("kind", Value::Str("fly".into())),
            ("qa.ok", Value::Bool(true)),
            ("blob", Value::Bytes(vec![1, 2])),
        ]);
        for (expr, want) in [
            ("scan == 17", true),
            ("scan == 17.0", true),
            ("scan != 17", false),
            ("scan < 18 and scan >= 17", true),
            ("energy_kev > 6", true),
            ("energy_kev in [6, 6.5]", true),
            ("energy_kev in [6, 6.5)", false),
            ("energy_kev in (6.5, 7]", false),
            ("scan in {1, 2, 17}", true),
            ("kind in {\"step\", \"fly\"}", true),
            ("kind == \"fly\" and qa.ok == true", true),
            ("kind < \"g\"", true),
            ("has(blob) and not has(missing)", true),
            ("missing == 1", false),
            ("missing != 1", false),
            ("not (missing == 1)", true),
            ("kind == 3", false),
            ("kind != 3", false),
            ("blob == \"\\u{1}\\u{2}\"", false),
            ("scan == 1 or scan == 17", true),
            ("false or (true and not false)", true),
            ("`qa.ok` == true", true),
        ] {
            assert_eq!(m(expr, &e), want, "{expr}");
        }
    }

    #[test]
    fn and_binds_tighter_than_or() {
        let e = ev(&[("a", Value::Int(1))]);
        assert!(m("a == 1 or a == 2 and a == 3", &e));
        assert!(!m("(a == 1 or a == 2) and a == 3", &e));
    }

    #[test]
    fn errors_say_where_and_what() {
        for (expr, column, says) in [
            ("scan = 3", 6, "`==`"),
            ("scan == ", 9, "expected a value"),
            ("scan 3", 6, "a comparison"),
            ("(a == 1", 8, "`)` closing the `(` at column 1"),
            ("a == 1 b == 2", 8, "expected `and`, `or` or the end"),
            ("a in [1, 2", 11, "closing the interval"),
            ("a in {}", 8, "an empty set"),
            ("a == \"open", 6, "not closed"),
            ("a == \"\\q\"", 7, "unknown escape"),
            ("a == 99999999999999999999", 6, "64-bit"),
            ("a && b", 3, "use `and`"),
            ("a in [\"x\", 2]", 7, "a number"),
            ("", 1, "expected a condition"),
            ("a == 12abc", 8, "in a number"),
        ] {
            let e = Filter::parse(expr).expect_err(expr);
            assert_eq!(e.column, column, "{expr}: {e}");
            assert!(e.message.contains(says), "{expr}: {e}");
        }
        let e = Filter::parse("scan = 3").unwrap_err();
        assert_eq!(
            e.render("scan = 3"),
            "scan = 3\n     ^ `=` is not an operator: compare with `==`"
        );
    }

    #[test]
    fn limits_are_errors_not_crashes() {
        let deep = format!(
            "{}a == 1{}",
            "(".repeat(DEPTH_MAX + 1),
            ")".repeat(DEPTH_MAX + 1)
        );
        assert!(Filter::parse(&deep).unwrap_err().message.contains("nested"));
        let nots = format!("{}a == 1", "not ".repeat(DEPTH_MAX + 1));
        assert!(Filter::parse(&nots).is_err());
        let ok = format!("{}a == 1{}", "(".repeat(DEPTH_MAX), ")".repeat(DEPTH_MAX));
        assert!(Filter::parse(&ok).is_ok());
        // A long flat chain is not deep.
        let chain = vec!["a == 1"; 1000].join(" or ");
        assert!(Filter::parse(&chain).is_ok());
        let long = "a == 1 or ".repeat(TEXT_MAX / 10 + 1) + "a == 1";
        assert!(Filter::parse(&long).unwrap_err().message.contains("bytes"));
        let set = format!("a in {{{}}}", vec!["1"; SET_MAX + 1].join(","));
        assert!(Filter::parse(&set)
            .unwrap_err()
            .message
            .contains("set of more"));
    }

    #[test]
    fn items_expose_metadata_key_timestamp_and_length() {
        use diaspora_proto::v1::{value::Kind, Item, Value as V};
        let mut item = Item {
            payload: vec![0u8; 10].into(),
            key: b"scan-17".to_vec().into(),
            timestamp_us: 5,
            ..Default::default()
        };
        item.metadata.insert(
            "energy".into(),
            V {
                kind: Some(Kind::F(6.0)),
            },
        );
        let f = Filter::parse(
            "energy in [5, 7] and @key == \"scan-17\" and @payload_len == 10 and @timestamp_us < 6",
        )
        .unwrap();
        assert!(f.matches(&item));
    }

    #[test]
    fn printing_reads_back() {
        for expr in [
            "a == 1 and (b == \"x\\\"y\" or not has(`odd key`))",
            "x in (1.5, 2e10] or y in {true, -3, \"\\u{7}\"}",
        ] {
            let f = Filter::parse(expr).unwrap();
            let again = Filter::parse(&f.to_string()).unwrap();
            assert_eq!(f, again, "{f}");
        }
    }
}
