#![no_main]
//! Imaging request files, fed arbitrary bytes. Beyond "no panic", it checks what
//! users rely on: every problem names a line and column inside the text (or 0:0
//! for the whole file), no message leaks the YAML reader's internals, and a
//! request that is accepted reads back the same after being written out.

use std::sync::OnceLock;

use imgsan::rules::{detect_kind, to_yaml, RuleSet};
use libfuzzer_sys::fuzz_target;

fn rules() -> &'static RuleSet {
    static RULES: OnceLock<RuleSet> = OnceLock::new();
    RULES.get_or_init(|| RuleSet::embedded().expect("the built-in rules load"))
}

/// Words that belong to the reader's API, not to a rules file.
const INTERNALS: [&str; 5] = ["budget breached", "DuplicateKeyPolicy", "Options", "Nodes {", "Some("];

fn check_problems(text: &str, e: &imgsan::rules::RulesError) {
    // Lines as YAML counts them: \n, \r\n and a lone \r each end one.
    let lines = text.replace("\r\n", "\n").split(['\n', '\r']).count() as u64;
    for p in e.problems() {
        assert!(p.line <= lines + 1, "line {} of {lines}: {}", p.line, p.message);
        assert!(p.line > 0 || p.column == 0, "a column without a line: {p}");
        // A message may quote the file (an unknown key); only words the file does
        // not hold itself are the reader's.
        for w in INTERNALS.iter().filter(|w| !text.contains(**w)) {
            assert!(!p.message.contains(w), "internal wording {w:?} in {:?}", p.message);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = detect_kind("request.yaml", text) {
        check_problems(text, &e);
    }
    match rules().parse_request("request.yaml", text) {
        Err(e) => check_problems(text, &e),
        Ok(req) => {
            let again = rules()
                .parse_request("again.yaml", &to_yaml(&req))
                .unwrap_or_else(|e| panic!("a written-out request does not read back: {e}"));
            assert_eq!(again.name(), req.name());
            assert_eq!(again.description(), req.description());
            assert_eq!(again.exclude.len(), req.exclude.len());
        }
    }
});
