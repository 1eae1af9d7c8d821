//! `vpsup export`: the project in another system's terms. `k8s` turns
//! vpsup.toml and the compose model into a Kustomize tree (pure: facts in,
//! files out); `commands::export` gathers the facts and writes the files.

pub mod k8s;
