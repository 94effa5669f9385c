"""Config-driven steps that read inputs, call the core functions and write outputs."""
