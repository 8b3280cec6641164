//! `tanba verify` and `tanba stamp`. STUB until the signature filter lands.

use std::path::Path;

use anyhow::{bail, Result};

use super::{StampArgs, VerifyArgs};

pub fn verify(_args: &VerifyArgs, _config: Option<&Path>) -> Result<i32> {
    bail!("`tanba verify` is not available yet in this build")
}

pub fn stamp(_args: &StampArgs, _config: Option<&Path>) -> Result<i32> {
    bail!("`tanba stamp` is not available yet in this build")
}
