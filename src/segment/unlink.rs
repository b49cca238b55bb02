//! Removing a segment's name: [`unlink`], and the removal on drop that
//! leaves alone an object re-created under the same name meanwhile.

use nix::errno::Errno;

use super::name;
use crate::error::{Error, Result};
use crate::sys::shm;

/// Removes a segment's name. Handles that are open keep working.
pub fn unlink(name: &str) -> Result<()> {
    let name = name::validate(name)?;
    shm::unlink(name).map_err(|e| match e {
        Errno::ENOENT => Error::NotFound { name: name.to_string() },
        Errno::EACCES | Errno::EPERM => Error::PermissionDenied { name: name.to_string() },
        e => Error::os("shm_unlink", name, e),
    })
}

/// Removes `name` only if it still names the object `id` (device, inode):
/// if it was unlinked and re-created meanwhile, the new object stays.
pub(super) fn unlink_if_same(name: &str, id: (u64, u64)) {
    match shm::stat_name(name) {
        Ok(st) if (st.dev, st.ino) == id => match shm::unlink(name) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(e) => log::warn!("shmsync: could not unlink segment '{name}' on drop: {e}"),
        },
        Ok(_) => log::debug!("shmsync: '{name}' now names another object; left it in place"),
        Err(_) => {}
    }
}
