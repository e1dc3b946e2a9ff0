//! What a visitor browses with: browser, OS and device from the user agent, the ua-parser way
//! (uap-core's `regexes.yaml`), the device class and the bot flag.

use std::path::{Path, PathBuf};

pub use crate::model::event::DeviceType;

/// Why the rules cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{path}: not usable uap-core regexes: {reason}")]
pub struct AgentError {
    pub path: PathBuf,
    pub reason: String,
}

/// What a user agent says; uap-core's fields, then the class and the bot flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    pub browser_family: String,
    pub browser_major: Option<String>,
    pub browser_minor: Option<String>,
    pub browser_patch: Option<String>,
    pub os_family: String,
    pub os_major: Option<String>,
    pub os_minor: Option<String>,
    pub os_patch: Option<String>,
    pub os_patch_minor: Option<String>,
    pub device_family: String,
    pub device_brand: Option<String>,
    pub device_model: Option<String>,
    pub device_type: DeviceType,
    pub bot: bool,
}

impl Agent {
    /// Phones and tablets.
    pub fn mobile(&self) -> bool {
        self.device_type != DeviceType::Desktop
    }
}

/// Words that only crawlers, monitors and scripts put in their user agents (compared without
/// case), beside uap-core's own `Spider` device.
const BOT_WORDS: [&str; 12] = [
    "bot",
    "crawl",
    "spider",
    "slurp",
    "curl/",
    "wget/",
    "python-",
    "go-http-client",
    "java/",
    "headless",
    "monitor",
    "preview",
];

fn has_word(ua: &str, words: &[&str]) -> bool {
    let lower = ua.to_ascii_lowercase();
    words.iter().any(|w| lower.contains(w))
}

/// Compiled uap-core rules.
pub struct Agents {
    extractor: ua_parser::Extractor<'static>,
}

impl std::fmt::Debug for Agents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Agents")
    }
}

const OTHER: &str = "Other";

/// Bytes of a user agent that are parsed. Real browsers' agents fit well within it (the
/// browser, OS and device tokens come first); the regexes' cost grows with the length, so an
/// agent of the 16 KiB a request head allows would otherwise cost 20–30 times a normal one.
pub const MAX_PARSED_AGENT: usize = 512;

/// The part of `ua` that is parsed: its first [`MAX_PARSED_AGENT`] bytes, cut back to a
/// character boundary.
pub fn parsed_part(ua: &str) -> &str {
    if ua.len() <= MAX_PARSED_AGENT {
        return ua;
    }
    let mut end = MAX_PARSED_AGENT;
    while !ua.is_char_boundary(end) {
        end -= 1;
    }
    &ua[..end]
}

/// [`parsed_part`] over bytes (a cache key): the first [`MAX_PARSED_AGENT`] bytes.
pub fn parsed_bytes(ua: &[u8]) -> &[u8] {
    &ua[..ua.len().min(MAX_PARSED_AGENT)]
}

fn own(s: Option<&str>) -> Option<String> {
    s.filter(|s| !s.is_empty()).map(str::to_owned)
}

impl Agents {
    /// Reads and compiles uap-core's `regexes.yaml`.
    pub fn load(path: &Path) -> Result<Agents, AgentError> {
        let err = |reason: String| AgentError {
            path: path.to_owned(),
            reason,
        };
        let file = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
        let regexes: ua_parser::Regexes<'static> =
            serde_yaml_ng::from_reader(std::io::BufReader::new(file))
                .map_err(|e| err(e.to_string()))?;
        let extractor = ua_parser::Extractor::try_from(regexes).map_err(|e| err(e.to_string()))?;
        Ok(Agents { extractor })
    }

    /// Parses one user agent (this runs uap-core's regexes: cache the results). Only its
    /// first [`MAX_PARSED_AGENT`] bytes are looked at.
    pub fn parse(&self, ua: &str) -> Agent {
        let ua = parsed_part(ua);
        let (browser, os, device) = self.extractor.extract(ua);
        let device_family = device.as_ref().map_or(OTHER, |d| &*d.device);
        let device_brand = device.as_ref().and_then(|d| d.brand.as_deref());
        let os_family = os.as_ref().map_or(OTHER, |o| &*o.os);
        let bot = ua.trim().is_empty() || device_family == "Spider" || has_word(ua, &BOT_WORDS);
        let device_type = if device_family == "iPad"
            || device_brand.is_some_and(|b| b.contains("Tablet"))
            || has_word(ua, &["tablet", "ipad"])
            || (os_family == "Android" && !has_word(ua, &["mobile"]))
        {
            DeviceType::Tablet
        } else if matches!(os_family, "iOS" | "Android" | "Windows Phone" | "KaiOS")
            || has_word(ua, &["mobile", "iphone"])
        {
            DeviceType::Mobile
        } else {
            DeviceType::Desktop
        };
        Agent {
            browser_family: browser.as_ref().map_or(OTHER, |b| &*b.family).to_owned(),
            browser_major: own(browser.as_ref().and_then(|b| b.major)),
            browser_minor: own(browser.as_ref().and_then(|b| b.minor)),
            browser_patch: own(browser.as_ref().and_then(|b| b.patch)),
            os_family: os_family.to_owned(),
            os_major: own(os.as_ref().and_then(|o| o.major.as_deref())),
            os_minor: own(os.as_ref().and_then(|o| o.minor.as_deref())),
            os_patch: own(os.as_ref().and_then(|o| o.patch.as_deref())),
            os_patch_minor: own(os.as_ref().and_then(|o| o.patch_minor.as_deref())),
            device_family: device_family.to_owned(),
            device_brand: own(device_brand),
            device_model: own(device.as_ref().and_then(|d| d.model.as_deref())),
            device_type,
            bot,
        }
    }
}
