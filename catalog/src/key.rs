//! Config keys as errors name them (`campaigns[3].paths[0].offers[1].offer`), built as
//! values and formatted only when an error is reported: compiling a million campaigns must
//! not format a million keys it never shows.

use std::fmt;

/// A key: a root (`campaigns[3]`, `campaigns/c9`) and the fields and indexes under it.
#[derive(Debug, Clone, Copy)]
pub enum Key<'a> {
    Root(&'a str),
    Field(&'a Key<'a>, &'a str),
    Index(&'a Key<'a>, usize),
}

impl<'a> Key<'a> {
    /// `self.name`.
    pub fn field<'b>(&'b self, name: &'b str) -> Key<'b>
    where
        'a: 'b,
    {
        Key::Field(self, name)
    }

    /// `self[i]`.
    pub fn index<'b>(&'b self, i: usize) -> Key<'b>
    where
        'a: 'b,
    {
        Key::Index(self, i)
    }
}

impl fmt::Display for Key<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Root(s) => f.write_str(s),
            Key::Field(parent, name) => write!(f, "{parent}.{name}"),
            Key::Index(parent, i) => write!(f, "{parent}[{i}]"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_read_as_written() {
        let root = Key::Root("campaigns");
        let c = root.index(3);
        let paths = c.field("paths");
        let p = paths.index(0);
        assert_eq!(
            p.field("landing_page").to_string(),
            "campaigns[3].paths[0].landing_page"
        );
    }
}
