#![no_main]
//! See rollouts::fuzzing::analysis_template for what this target runs.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| rollouts::fuzzing::analysis_template(data));
