//! `lint FILE`: offline validation of Rollout and AnalysisTemplate YAML.
