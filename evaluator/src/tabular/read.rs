//! Reading a CSV file into a [`Frame`], with the `csv` crate, in two passes: the first finds the
//! columns whose every present value is a finite number, the second stores them as numbers and
//! the others as interned strings (a 100k-row file never holds its cells as strings).
//!
//! The first row is the header; fields are trimmed; every row has the header's number of fields.
//! A field equal to one of the missing tokens ([`DEFAULT_NA`]: the empty field, `NA`, `?` and
//! `NaN`, or those given with `--na`) is missing.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;

use super::error::{Result, TabularError};
use super::frame::{Column, ColumnData, Frame, MISSING};

/// The fields read as missing by default.
pub const DEFAULT_NA: [&str; 4] = ["", "NA", "?", "NaN"];

/// How to read a CSV.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadOptions {
    /// Fields that are missing values (compared after trimming).
    pub na: Vec<String>,
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            na: DEFAULT_NA.iter().map(|s| s.to_string()).collect(),
        }
    }
}

impl ReadOptions {
    /// The options of `--na TOKENS`: the fields separated by commas (each trimmed) are the
    /// missing values; `None`: the defaults ([`DEFAULT_NA`]).
    pub fn with_na(tokens: Option<&str>) -> ReadOptions {
        match tokens {
            Some(t) => ReadOptions {
                na: t.split(',').map(|f| f.trim().to_string()).collect(),
            },
            None => ReadOptions::default(),
        }
    }

    fn is_na(&self, field: &str) -> bool {
        self.na.iter().any(|n| n == field)
    }
}

/// Read `path` (see the module's rules).
pub fn read_csv(path: &Path, options: &ReadOptions) -> Result<Frame> {
    let shown = path.display().to_string();
    let names = header(path)?;
    let (numeric, rows) = numeric_columns(path, names.len(), options)?;
    if rows == 0 {
        return Err(TabularError::HeaderOnly(shown));
    }
    let mut builders: Vec<Builder> = numeric.iter().map(|&n| Builder::new(n, rows)).collect();
    let mut reader = open(path)?;
    let mut record = csv::StringRecord::new();
    while reader.read_record(&mut record).map_err(|e| csv_error(&shown, e))? {
        for (b, field) in builders.iter_mut().zip(record.iter()) {
            b.push(field, options);
        }
    }
    let columns = names.into_iter().zip(builders).map(|(name, b)| Column { name, data: b.finish() }).collect();
    Ok(Frame { columns, rows })
}

fn open(path: &Path) -> Result<csv::Reader<File>> {
    let file = File::open(path).map_err(|source| TabularError::Io {
        path: path.display().to_string(),
        source,
    })?;
    Ok(csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .trim(csv::Trim::All)
        .from_reader(file))
}

/// The header's names: present, unique.
fn header(path: &Path) -> Result<Vec<String>> {
    let shown = path.display().to_string();
    let mut reader = open(path)?;
    let names: Vec<String> = reader.headers().map_err(|e| csv_error(&shown, e))?.iter().map(str::to_string).collect();
    if names.is_empty() || (names.len() == 1 && names[0].is_empty()) {
        return Err(TabularError::Empty(shown));
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, n) in names.iter().enumerate() {
        if n.is_empty() {
            return Err(TabularError::UnnamedColumn { path: shown, position: i + 1 });
        }
        if let Some(first) = seen.insert(n, i + 1) {
            return Err(TabularError::DuplicateColumn {
                path: shown,
                name: n.clone(),
                first,
                second: i + 1,
            });
        }
    }
    Ok(names)
}

/// Pass one: which columns are numeric (every present value a finite number; a column with no
/// present value counts as numeric), and the number of data rows.
fn numeric_columns(path: &Path, width: usize, options: &ReadOptions) -> Result<(Vec<bool>, usize)> {
    let shown = path.display().to_string();
    let mut reader = open(path)?;
    let mut numeric = vec![true; width];
    let mut rows = 0;
    let mut record = csv::StringRecord::new();
    while reader.read_record(&mut record).map_err(|e| csv_error(&shown, e))? {
        rows += 1;
        for (n, field) in numeric.iter_mut().zip(record.iter()) {
            if *n && !options.is_na(field) && parse_number(field).is_none() {
                *n = false;
            }
        }
    }
    Ok((numeric, rows))
}

fn parse_number(field: &str) -> Option<f64> {
    field.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// The csv crate's errors as one line each, with the line number.
fn csv_error(path: &str, e: csv::Error) -> TabularError {
    let path = path.to_string();
    match e.kind() {
        csv::ErrorKind::UnequalLengths { pos, expected_len, len } => TabularError::Ragged {
            path,
            line: pos.as_ref().map_or(0, |p| p.line()),
            found: *len as usize,
            expected: *expected_len as usize,
        },
        csv::ErrorKind::Utf8 { pos, .. } => TabularError::NotUtf8 {
            line: first_non_utf8_line(&path).or(pos.as_ref().map(|p| p.line())).unwrap_or(1),
            path,
        },
        csv::ErrorKind::Io(io) => TabularError::Io {
            path,
            source: std::io::Error::new(io.kind(), io.to_string()),
        },
        _ => TabularError::Csv { path, message: e.to_string() },
    }
}

/// The 1-based line of the file's first bytes that are not UTF-8 (the csv crate's position is
/// that of the record, which it does not always know).
fn first_non_utf8_line(path: &str) -> Option<u64> {
    let bytes = std::fs::read(path).ok()?;
    let valid = std::str::from_utf8(&bytes).err()?.valid_up_to();
    Some(bytes[..valid].iter().filter(|&&b| b == b'\n').count() as u64 + 1)
}

/// Pass two's store of one column.
enum Builder {
    Numeric(Vec<f64>),
    Categorical {
        codes: Vec<u32>,
        levels: Vec<String>,
        index: HashMap<String, u32>,
    },
}

impl Builder {
    fn new(numeric: bool, rows: usize) -> Self {
        match numeric {
            true => Builder::Numeric(Vec::with_capacity(rows)),
            false => Builder::Categorical {
                codes: Vec::with_capacity(rows),
                levels: Vec::new(),
                index: HashMap::new(),
            },
        }
    }

    fn push(&mut self, field: &str, options: &ReadOptions) {
        let missing = options.is_na(field);
        match self {
            Builder::Numeric(v) => v.push(if missing { f64::NAN } else { parse_number(field).unwrap_or(f64::NAN) }),
            Builder::Categorical { codes, levels, index } => {
                let code = match missing {
                    true => MISSING,
                    false => *index.entry(field.to_string()).or_insert_with(|| {
                        levels.push(field.to_string());
                        levels.len() as u32 - 1
                    }),
                };
                codes.push(code);
            }
        }
    }

    fn finish(self) -> ColumnData {
        match self {
            Builder::Numeric(v) => ColumnData::Numeric(v),
            Builder::Categorical { codes, levels, .. } => ColumnData::Categorical { codes, levels },
        }
    }
}

/// The frame of a CSV text, read with the default options (the tabular modules' unit tests).
#[cfg(test)]
pub(crate) fn frame_of(text: &str) -> Frame {
    let mut f = tempfile::NamedTempFile::new().expect("a temporary file");
    std::io::Write::write_all(&mut f, text.as_bytes()).expect("written");
    read_csv(f.path(), &ReadOptions::default()).expect("a readable CSV")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, text).unwrap();
        f
    }

    fn read(text: &[u8]) -> Result<Frame> {
        let f = write(text);
        read_csv(f.path(), &ReadOptions::default())
    }

    #[test]
    fn columns_are_numbers_or_interned_strings_and_missing_tokens_are_missing() {
        let f = read(b"a,b,c\n1, x ,NA\n2.5,y,?\n,x,NaN\n").unwrap();
        assert_eq!(f.rows, 3);
        assert_eq!(f.names(), ["a", "b", "c"]);
        let ColumnData::Numeric(a) = &f.columns[0].data else { panic!() };
        assert_eq!(&a[..2], &[1.0, 2.5]);
        assert!(a[2].is_nan());
        assert_eq!(
            f.columns[1].data,
            ColumnData::Categorical {
                codes: vec![0, 1, 0],
                levels: vec!["x".into(), "y".into()]
            }
        );
        assert_eq!(f.columns[2].missing(), 3);
        // A stray word makes the column categorical, the numbers kept as written.
        let f = read(b"a\n1.50\nabc\n").unwrap();
        assert_eq!(f.columns[0].text(0).as_deref(), Some("1.50"));
        // --na replaces the tokens: '?' is then a value.
        let file = write(b"a\n?\n-\n");
        let f = read_csv(file.path(), &ReadOptions { na: vec!["-".into()] }).unwrap();
        assert_eq!(f.columns[0].text(0).as_deref(), Some("?"));
        assert!(f.columns[0].is_missing(1));
    }

    #[test]
    fn bad_files_are_one_line_errors_that_say_where() {
        let e = |text: &[u8]| read(text).unwrap_err().to_string();
        assert!(e(b"").contains("the file is empty"), "{}", e(b""));
        assert!(e(b"a,b\n").contains("no data rows"));
        let ragged = e(b"a,b\n1,2\n3\n");
        assert!(ragged.contains("line 3 has 1 fields, the header has 2"), "{ragged}");
        let bytes = e(b"a,b\n1,2\n\xff\xfe,3\n");
        assert!(bytes.contains("line 3 is not UTF-8"), "{bytes}");
        let dup = e(b"a,b,a\n1,2,3\n");
        assert!(dup.contains("'a' appears twice (columns 1 and 3)"), "{dup}");
        assert!(e(b"a,,c\n1,2,3\n").contains("column 2 has no name"));
        for text in [&b""[..], b"a,b\n", b"a,b\n1,2\n3\n"] {
            assert!(!e(text).contains('\n'));
        }
    }
}
