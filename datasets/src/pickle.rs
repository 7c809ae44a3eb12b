//! A small pickle reader, enough for the CIFAR "python version" files.
//!
//! Those are dicts pickled by Python 2 (protocol 2) holding numpy arrays, which arrive as
//! `numpy.core.multiarray._reconstruct` + `BUILD` with the raw array bytes in a string. This
//! reader runs the pickle opcodes into plain [`Value`]s without executing anything: a global
//! is only recorded by name. Protocols 0–4 opcodes that such files use are supported.

use std::collections::HashMap;

use PickleErrorKind as K;

/// A decoded pickle value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `None`.
    None,
    /// `True` / `False`.
    Bool(bool),
    /// An integer that fits in i64.
    Int(i64),
    /// A float.
    Float(f64),
    /// A byte string (Python 2 `str`, Python 3 `bytes`).
    Bytes(Vec<u8>),
    /// A text string.
    Str(String),
    /// A list.
    List(Vec<Value>),
    /// A tuple.
    Tuple(Vec<Value>),
    /// A dict, in insertion order.
    Dict(Vec<(Value, Value)>),
    /// A reference to a global (`module.name`), not resolved.
    Global(String, String),
    /// The result of calling a global with arguments, plus the state `BUILD` set on it.
    Object {
        /// The callable.
        func: Box<Value>,
        /// Its arguments.
        args: Box<Value>,
        /// State from `BUILD`, if any.
        state: Option<Box<Value>>,
    },
}

impl Value {
    /// Looks `key` up in a dict whose keys are byte or text strings.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(items) => items.iter().find_map(|(k, v)| match k {
                Value::Bytes(b) if b == key.as_bytes() => Some(v),
                Value::Str(s) if s == key => Some(v),
                _ => None,
            }),
            _ => None,
        }
    }

    /// The value as a list or tuple of items.
    pub fn items(&self) -> Option<&[Value]> {
        match self {
            Value::List(v) | Value::Tuple(v) => Some(v),
            _ => None,
        }
    }

    /// The value as bytes (byte or text string; text as latin-1 / UTF-8 bytes).
    pub fn bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            Value::Str(s) => Some(s.as_bytes()),
            _ => None,
        }
    }

    /// For a numpy array built by `_reconstruct` + `BUILD`: its shape and raw data bytes.
    pub fn ndarray(&self) -> Option<(Vec<i64>, &[u8])> {
        let Value::Object { state: Some(state), .. } = self else {
            return None;
        };
        let st = state.items()?;
        // state = (version, shape, dtype, is_fortran, rawdata)
        let shape = st
            .get(1)?
            .items()?
            .iter()
            .map(|v| if let Value::Int(i) = v { Some(*i) } else { None })
            .collect::<Option<Vec<_>>>()?;
        let data = st.get(4)?.bytes()?;
        Some((shape, data))
    }
}

/// Deepest nesting of lists, tuples, dicts and objects accepted. CIFAR's files nest 4 deep; a
/// deeper pickle is refused (50,000 nested lists would overflow the stack when dropped).
pub const MAX_DEPTH: usize = 100;

/// Why a pickle does not parse: what is wrong ([`PickleErrorKind`]) and where.
///
/// The message (`truncated pickle at byte 1234`) has no file name: callers add it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} at byte {at}")]
pub struct PickleError {
    /// Byte offset in the pickle: of the opcode at fault, or where its missing bytes or its bad
    /// text line begin.
    pub at: usize,
    /// What is wrong.
    pub kind: PickleErrorKind,
}

/// What is wrong with a pickle ([`PickleError`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PickleErrorKind {
    /// The data ends inside an opcode or its argument, or before `STOP`.
    #[error("truncated pickle")]
    Truncated,
    /// A text argument without its closing newline.
    #[error("unterminated line")]
    UnterminatedLine,
    /// A text argument (protocol 0) that is not UTF-8.
    #[error("bad text")]
    BadText,
    /// A string argument that is not UTF-8.
    #[error("invalid UTF-8 string")]
    InvalidUtf8,
    /// A text number (the argument of this opcode: `INT`, `LONG`, `PUT`, `GET`) that does not parse.
    #[error("bad {0}")]
    BadNumber(&'static str),
    /// A `LONG1` integer wider than 64 bits.
    #[error("integer too large")]
    IntegerTooLarge,
    /// An opcode needs more values than the stack holds.
    #[error("stack underflow")]
    StackUnderflow,
    /// An opcode that collects items up to a mark, with no mark set.
    #[error("no mark")]
    NoMark,
    /// A mark above the top of the stack.
    #[error("bad mark")]
    BadMark,
    /// `STACK_GLOBAL` whose module and name are not strings.
    #[error("bad STACK_GLOBAL")]
    BadStackGlobal,
    /// A memo `GET` of a key never `PUT`.
    #[error("unknown memo {0}")]
    UnknownMemo(u32),
    /// `APPEND` / `APPENDS` (this opcode) on something that is not a list.
    #[error("{0} to a non-list")]
    NotAList(&'static str),
    /// `SETITEM` / `SETITEMS` (this opcode) on something that is not a dict.
    #[error("{0} on a non-dict")]
    NotADict(&'static str),
    /// `BUILD` on a value that takes no state.
    #[error("BUILD on a plain value")]
    BuildOnPlainValue,
    /// Items for a dict that do not pair up.
    #[error("odd number of dict items")]
    OddDictItems,
    /// An opcode this reader does not run (the number).
    #[error("unsupported pickle opcode 0x{0:02x}")]
    UnsupportedOpcode(u8),
    /// Values nested deeper than [`MAX_DEPTH`].
    #[error("values nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    /// Memo copies beyond the budget (a small multiple of the input's size).
    #[error("pickle expands far beyond its size (memo copies)")]
    ExpandsTooFar,
}

impl PickleErrorKind {
    fn at(self, at: usize) -> PickleError {
        PickleError { at, kind: self }
    }
}

/// Parses one pickle. The error says what is wrong and at which byte.
///
/// Nesting is bounded by [`MAX_DEPTH`], and what the memo copies (`PUT`, `GET`, `DUP`) by a
/// small multiple of the input's size, so that a hostile pickle cannot exhaust the stack or memory.
pub fn parse(data: &[u8]) -> Result<Value, PickleError> {
    Machine {
        data,
        pos: 0,
        op: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        copy_budget: data.len().saturating_mul(4).saturating_add(1 << 20),
    }
    .run()
}

/// A value on the machine's stack with its nesting depth (1 for a scalar or an empty container).
type Entry = (Value, usize);

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    /// Offset of the opcode being run.
    op: usize,
    stack: Vec<Entry>,
    marks: Vec<usize>,
    memo: HashMap<u32, Entry>,
    /// Bytes and items the memo may still copy.
    copy_budget: usize,
}

/// Items and bytes in `v` (what cloning it costs).
fn weight(v: &Value) -> usize {
    match v {
        Value::Bytes(b) => 1 + b.len(),
        Value::Str(s) => 1 + s.len(),
        Value::Global(m, n) => 1 + m.len() + n.len(),
        Value::List(items) | Value::Tuple(items) => 1 + items.iter().map(weight).sum::<usize>(),
        Value::Dict(kv) => 1 + kv.iter().map(|(k, v)| weight(k) + weight(v)).sum::<usize>(),
        Value::Object { func, args, state } => {
            1 + weight(func) + weight(args) + state.as_deref().map(weight).unwrap_or(0)
        }
        Value::None | Value::Bool(_) | Value::Int(_) | Value::Float(_) => 1,
    }
}

impl<'a> Machine<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], PickleError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len()).ok_or_else(|| K::Truncated.at(self.pos))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, PickleError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, PickleError> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }
    fn u32(&mut self) -> Result<u32, PickleError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64, PickleError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn line(&mut self) -> Result<&'a str, PickleError> {
        let rest = &self.data[self.pos..];
        let start = self.pos;
        let n = rest.iter().position(|&b| b == b'\n').ok_or_else(|| K::UnterminatedLine.at(start))?;
        self.pos += n + 1;
        std::str::from_utf8(&rest[..n]).map_err(|_| K::BadText.at(start))
    }
    /// Pushes a scalar.
    fn leaf(&mut self, v: Value) {
        self.stack.push((v, 1));
    }
    /// Pushes a container holding values of depth `inner` (0 when empty).
    fn node(&mut self, v: Value, inner: usize, at: usize) -> Result<(), PickleError> {
        self.stack.push((v, nest(inner, at)?));
        Ok(())
    }
    fn pop(&mut self) -> Result<Entry, PickleError> {
        self.stack.pop().ok_or_else(|| K::StackUnderflow.at(self.op))
    }
    fn top(&mut self) -> Result<&mut Entry, PickleError> {
        let op = self.op;
        self.stack.last_mut().ok_or_else(|| K::StackUnderflow.at(op))
    }
    /// The items above the last mark, and their greatest depth.
    fn pop_mark(&mut self) -> Result<(Vec<Value>, usize), PickleError> {
        let m = self.marks.pop().ok_or_else(|| K::NoMark.at(self.op))?;
        if m > self.stack.len() {
            return Err(K::BadMark.at(self.op));
        }
        let items = self.stack.split_off(m);
        let depth = items.iter().map(|(_, d)| *d).max().unwrap_or(0);
        Ok((items.into_iter().map(|(v, _)| v).collect(), depth))
    }
    /// Memo `PUT`: a copy of the top of the stack, charged to the copy budget.
    fn put(&mut self, k: u32, at: usize) -> Result<(), PickleError> {
        let e = self.stack.last().ok_or_else(|| K::StackUnderflow.at(at))?;
        charge(&mut self.copy_budget, &e.0, at)?;
        self.memo.insert(k, e.clone());
        Ok(())
    }
    fn str_of(b: &[u8], at: usize) -> Result<String, PickleError> {
        String::from_utf8(b.to_vec()).map_err(|_| K::InvalidUtf8.at(at))
    }

    fn run(mut self) -> Result<Value, PickleError> {
        loop {
            let at = self.pos;
            self.op = at;
            let op = self.u8()?;
            match op {
                0x80 => {
                    self.u8()?; // PROTO
                }
                0x95 => {
                    self.u64()?; // FRAME
                }
                b'.' => return self.pop().map(|(v, _)| v), // STOP
                b'(' => self.marks.push(self.stack.len()),
                b'}' => self.leaf(Value::Dict(Vec::new())),
                b']' => self.leaf(Value::List(Vec::new())),
                b')' => self.leaf(Value::Tuple(Vec::new())),
                b'N' => self.leaf(Value::None),
                0x88 => self.leaf(Value::Bool(true)),
                0x89 => self.leaf(Value::Bool(false)),
                b'J' => {
                    let v = i32::from_le_bytes(self.take(4)?.try_into().unwrap());
                    self.leaf(Value::Int(v as i64))
                }
                b'K' => {
                    let v = self.u8()?;
                    self.leaf(Value::Int(v as i64))
                }
                b'M' => {
                    let v = self.u16()?;
                    self.leaf(Value::Int(v as i64))
                }
                0x8a => {
                    // LONG1
                    let n = self.u8()? as usize;
                    let b = self.take(n)?;
                    if n > 8 {
                        return Err(K::IntegerTooLarge.at(at));
                    }
                    let mut v: i64 = 0;
                    for (i, &x) in b.iter().enumerate() {
                        v |= (x as i64) << (8 * i);
                    }
                    if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                        v -= 1i64 << (8 * n);
                    }
                    self.leaf(Value::Int(v))
                }
                b'I' => {
                    let l = self.line()?;
                    let v = match l {
                        "01" => Value::Bool(true),
                        "00" => Value::Bool(false),
                        _ => Value::Int(l.parse().map_err(|_| K::BadNumber("INT").at(at))?),
                    };
                    self.leaf(v)
                }
                b'L' => {
                    let l = self.line()?.trim_end_matches('L');
                    self.leaf(Value::Int(l.parse().map_err(|_| K::BadNumber("LONG").at(at))?))
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.take(8)?.try_into().unwrap());
                    self.leaf(Value::Float(v))
                }
                b'U' | b'C' => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?.to_vec();
                    self.leaf(Value::Bytes(b))
                }
                b'T' | b'B' => {
                    let n = self.u32()? as usize;
                    let b = self.take(n)?.to_vec();
                    self.leaf(Value::Bytes(b))
                }
                0x8e => {
                    let n = usize::try_from(self.u64()?).map_err(|_| K::Truncated.at(at))?;
                    let b = self.take(n)?.to_vec();
                    self.leaf(Value::Bytes(b))
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    let s = Self::str_of(self.take(n)?, at)?;
                    self.leaf(Value::Str(s))
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let s = Self::str_of(self.take(n)?, at)?;
                    self.leaf(Value::Str(s))
                }
                0x8d => {
                    let n = usize::try_from(self.u64()?).map_err(|_| K::Truncated.at(at))?;
                    let s = Self::str_of(self.take(n)?, at)?;
                    self.leaf(Value::Str(s))
                }
                b'S' => {
                    let l = self.line()?;
                    let s = l.trim_matches(|c| c == '\'' || c == '"');
                    self.leaf(Value::Bytes(s.as_bytes().to_vec()))
                }
                b'V' => {
                    let l = self.line()?.to_string();
                    self.leaf(Value::Str(l))
                }
                b'c' => {
                    let module = self.line()?.to_string();
                    let name = self.line()?.to_string();
                    self.leaf(Value::Global(module, name))
                }
                0x93 => {
                    // STACK_GLOBAL
                    let (name, _) = self.pop()?;
                    let (module, _) = self.pop()?;
                    match (module, name) {
                        (Value::Str(m), Value::Str(n)) => self.leaf(Value::Global(m, n)),
                        _ => return Err(K::BadStackGlobal.at(at)),
                    }
                }
                b'q' => {
                    let k = self.u8()? as u32;
                    self.put(k, at)?;
                }
                b'r' => {
                    let k = self.u32()?;
                    self.put(k, at)?;
                }
                0x94 => {
                    let k = self.memo.len() as u32;
                    self.put(k, at)?;
                }
                b'p' => {
                    let k: u32 = self.line()?.parse().map_err(|_| K::BadNumber("PUT").at(at))?;
                    self.put(k, at)?;
                }
                b'h' | b'j' | b'g' => {
                    let k = match op {
                        b'h' => self.u8()? as u32,
                        b'j' => self.u32()?,
                        _ => self.line()?.parse().map_err(|_| K::BadNumber("GET").at(at))?,
                    };
                    let e = self.memo.get(&k).ok_or_else(|| K::UnknownMemo(k).at(at))?;
                    charge(&mut self.copy_budget, &e.0, at)?;
                    self.stack.push(e.clone())
                }
                0x85 => {
                    let (a, d) = self.pop()?;
                    self.node(Value::Tuple(vec![a]), d, at)?
                }
                0x86 => {
                    let (b, db) = self.pop()?;
                    let (a, da) = self.pop()?;
                    self.node(Value::Tuple(vec![a, b]), da.max(db), at)?
                }
                0x87 => {
                    let (c, dc) = self.pop()?;
                    let (b, db) = self.pop()?;
                    let (a, da) = self.pop()?;
                    self.node(Value::Tuple(vec![a, b, c]), da.max(db).max(dc), at)?
                }
                b't' => {
                    let (items, d) = self.pop_mark()?;
                    self.node(Value::Tuple(items), d, at)?
                }
                b'l' => {
                    let (items, d) = self.pop_mark()?;
                    self.node(Value::List(items), d, at)?
                }
                b'd' => {
                    let (items, d) = self.pop_mark()?;
                    self.node(Value::Dict(pairs(items, at)?), d, at)?
                }
                b'a' => {
                    let (v, d) = self.pop()?;
                    let depth = nest(d, at)?;
                    match self.top()? {
                        (Value::List(l), ld) => {
                            l.push(v);
                            *ld = (*ld).max(depth);
                        }
                        _ => return Err(K::NotAList("APPEND").at(at)),
                    }
                }
                b'e' => {
                    let (items, d) = self.pop_mark()?;
                    let depth = nest(d, at)?;
                    match self.top()? {
                        (Value::List(l), ld) => {
                            l.extend(items);
                            *ld = (*ld).max(depth);
                        }
                        _ => return Err(K::NotAList("APPENDS").at(at)),
                    }
                }
                b's' => {
                    let (v, dv) = self.pop()?;
                    let (k, dk) = self.pop()?;
                    let depth = nest(dv.max(dk), at)?;
                    match self.top()? {
                        (Value::Dict(d), dd) => {
                            d.push((k, v));
                            *dd = (*dd).max(depth);
                        }
                        _ => return Err(K::NotADict("SETITEM").at(at)),
                    }
                }
                b'u' => {
                    let (items, d) = self.pop_mark()?;
                    let depth = nest(d, at)?;
                    let kv = pairs(items, at)?;
                    match self.top()? {
                        (Value::Dict(d), dd) => {
                            d.extend(kv);
                            *dd = (*dd).max(depth);
                        }
                        _ => return Err(K::NotADict("SETITEMS").at(at)),
                    }
                }
                b'R' => {
                    let (args, da) = self.pop()?;
                    let (func, df) = self.pop()?;
                    let v = reduce(func, args);
                    match v {
                        Value::Bytes(_) => self.leaf(v),
                        _ => self.node(v, da.max(df), at)?,
                    }
                }
                0x81 => {
                    // NEWOBJ
                    let (args, da) = self.pop()?;
                    let (cls, dc) = self.pop()?;
                    self.node(Value::Object { func: Box::new(cls), args: Box::new(args), state: None }, da.max(dc), at)?
                }
                b'b' => {
                    let (state, ds) = self.pop()?;
                    let depth = nest(ds, at)?;
                    match self.top()? {
                        (Value::Object { state: s, .. }, d) => {
                            *s = Some(Box::new(state));
                            *d = (*d).max(depth);
                        }
                        (Value::Dict(d), dd) => {
                            if let Value::Dict(kv) = state {
                                d.extend(kv);
                                // The state's items join the dict: their depth is the state's.
                                *dd = (*dd).max(ds);
                            }
                        }
                        _ => return Err(K::BuildOnPlainValue.at(at)),
                    }
                }
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let e = self.stack.last().ok_or_else(|| K::StackUnderflow.at(at))?;
                    charge(&mut self.copy_budget, &e.0, at)?;
                    let e = e.clone();
                    self.stack.push(e)
                }
                _ => return Err(K::UnsupportedOpcode(op).at(at)),
            }
        }
    }
}

/// Takes the cost of copying `v` from `budget`, or fails when the budget is spent.
fn charge(budget: &mut usize, v: &Value, at: usize) -> Result<(), PickleError> {
    *budget = budget.checked_sub(weight(v)).ok_or_else(|| K::ExpandsTooFar.at(at))?;
    Ok(())
}

/// The depth of a container whose deepest item has depth `inner`, or an error past [`MAX_DEPTH`].
fn nest(inner: usize, at: usize) -> Result<usize, PickleError> {
    let d = inner + 1;
    if d > MAX_DEPTH {
        return Err(K::TooDeep.at(at));
    }
    Ok(d)
}

fn pairs(items: Vec<Value>, at: usize) -> Result<Vec<(Value, Value)>, PickleError> {
    if items.len() % 2 != 0 {
        return Err(K::OddDictItems.at(at));
    }
    let mut it = items.into_iter();
    let mut out = Vec::new();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Ok(out)
}

/// `_codecs.encode(text, 'latin1')` is how Python 3's protocol 2 writes bytes: apply it.
fn reduce(func: Value, args: Value) -> Value {
    if let (Value::Global(m, n), Value::Tuple(a)) = (&func, &args) {
        if m == "_codecs" && n == "encode" {
            if let Some(Value::Str(s)) = a.first() {
                let bytes: Option<Vec<u8>> = s.chars().map(|c| u8::try_from(c as u32).ok()).collect();
                if let Some(b) = bytes {
                    return Value::Bytes(b);
                }
            }
        }
    }
    Value::Object { func: Box::new(func), args: Box::new(args), state: None }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_small_dict_protocol2() {
        // pickle.dumps({b'labels': [1, 2], b'x': 300}, protocol=2) as Python 2 would write it
        let mut p = vec![0x80, 2, b'}', b'q', 0, b'(', b'U', 6];
        p.extend_from_slice(b"labels");
        p.extend_from_slice(&[
            b'q', 1, b']', b'q', 2, b'(', b'K', 1, b'K', 2, b'e', b'U', 1, b'x', b'M', 0x2c, 0x01, b'u', b'.',
        ]);
        let v = parse(&p).unwrap();
        assert_eq!(v.get("labels").unwrap().items().unwrap(), &[Value::Int(1), Value::Int(2)]);
        assert_eq!(v.get("x"), Some(&Value::Int(300)));
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        // 50,000 empty lists, each appended to the one below: a list nested 50,000 deep.
        let mut p = vec![0x80, 2];
        p.extend(std::iter::repeat_n(b']', 50_000));
        p.extend(std::iter::repeat_n(b'a', 49_999));
        p.push(b'.');
        let err = parse(&p).unwrap_err();
        assert_eq!(err.kind, K::TooDeep, "{err}");
        assert!(err.to_string().starts_with("values nested deeper than 100 levels at byte "), "{err}");
        // The same through tuples and marks.
        let mut p = vec![0x80, 2, b'K', 1];
        p.extend(std::iter::repeat_n(0x85, 50_000));
        p.push(b'.');
        assert_eq!(parse(&p).unwrap_err().kind, K::TooDeep);
        let mut p = vec![0x80, 2];
        p.extend(std::iter::repeat_n(b'(', 50_000));
        p.extend(std::iter::repeat_n(b'l', 50_000));
        p.push(b'.');
        assert_eq!(parse(&p).unwrap_err().kind, K::TooDeep);
        // 100 levels are fine.
        let mut p = vec![0x80, 2];
        p.extend(std::iter::repeat_n(b']', 100));
        p.extend(std::iter::repeat_n(b'a', 99));
        p.push(b'.');
        assert!(parse(&p).is_ok());
    }

    #[test]
    fn memo_copies_are_bounded() {
        // A 1 MB string put in the memo and fetched 1,000 times: 1 GB from 1 MB of input.
        let mut p = vec![0x80, 2, b']', b'(', b'T'];
        p.extend_from_slice(&(1u32 << 20).to_le_bytes());
        p.extend(std::iter::repeat_n(b'x', 1 << 20));
        p.extend_from_slice(&[b'q', 0]);
        for _ in 0..1000 {
            p.extend_from_slice(&[b'h', 0]);
        }
        p.extend_from_slice(b"e.");
        let err = parse(&p).unwrap_err();
        assert_eq!(err.kind, K::ExpandsTooFar, "{err}");
        assert!(err.to_string().starts_with("pickle expands far beyond its size (memo copies) at byte "));
    }

    #[test]
    fn truncated_is_an_error_not_a_panic() {
        // BINSTRING of 65,535 bytes with one byte after its length.
        let err = parse(&[0x80, 2, b'T', 0xff, 0xff, 0, 0, 1]).unwrap_err();
        assert_eq!(err, PickleError { at: 7, kind: K::Truncated });
        assert_eq!(err.to_string(), "truncated pickle at byte 7");
        assert_eq!(parse(&[]).unwrap_err(), K::Truncated.at(0));
        assert_eq!(parse(b"K").unwrap_err(), K::Truncated.at(1));
        assert_eq!(parse(b"a").unwrap_err(), K::StackUnderflow.at(0));
    }

    /// Each kind of error, from the smallest pickle that has it, with the byte it names.
    #[test]
    fn each_error_names_its_kind_and_byte() {
        let cases: &[(&[u8], usize, PickleErrorKind, &str)] = &[
            (b"I1", 1, K::UnterminatedLine, "unterminated line at byte 1"),
            (b"I\xff\n.", 1, K::BadText, "bad text at byte 1"),
            (b"\x80\x02\x8c\x01\xff.", 2, K::InvalidUtf8, "invalid UTF-8 string at byte 2"),
            (b"Ixyz\n.", 0, K::BadNumber("INT"), "bad INT at byte 0"),
            (b"Lxyz\n.", 0, K::BadNumber("LONG"), "bad LONG at byte 0"),
            (b"NpX\n.", 1, K::BadNumber("PUT"), "bad PUT at byte 1"),
            (b"gX\n.", 0, K::BadNumber("GET"), "bad GET at byte 0"),
            (b"\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x00.", 0, K::IntegerTooLarge, "integer too large at byte 0"),
            (b".", 0, K::StackUnderflow, "stack underflow at byte 0"),
            (b"Nt.", 1, K::NoMark, "no mark at byte 1"),
            (b"N(0t.", 3, K::BadMark, "bad mark at byte 3"),
            (b"NN\x93.", 2, K::BadStackGlobal, "bad STACK_GLOBAL at byte 2"),
            (b"h\x05.", 0, K::UnknownMemo(5), "unknown memo 5 at byte 0"),
            (b"}Na.", 2, K::NotAList("APPEND"), "APPEND to a non-list at byte 2"),
            (b"}(Ne.", 3, K::NotAList("APPENDS"), "APPENDS to a non-list at byte 3"),
            (b"]NNs.", 3, K::NotADict("SETITEM"), "SETITEM on a non-dict at byte 3"),
            (b"](NNu.", 4, K::NotADict("SETITEMS"), "SETITEMS on a non-dict at byte 4"),
            (b"NNb.", 2, K::BuildOnPlainValue, "BUILD on a plain value at byte 2"),
            (b"(Nd.", 2, K::OddDictItems, "odd number of dict items at byte 2"),
            (b"N\xff.", 1, K::UnsupportedOpcode(0xff), "unsupported pickle opcode 0xff at byte 1"),
        ];
        for (p, at, kind, msg) in cases {
            let err = parse(p).unwrap_err();
            assert_eq!(err, kind.clone().at(*at), "{p:?}");
            assert_eq!(err.to_string(), *msg, "{p:?}");
        }
    }
}
