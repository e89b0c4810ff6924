#[path = "common/guest.rs"]
mod guest;

#[test]
fn builds() {
    for d in guest::Distro::ALL {
        let dir = tempfile::tempdir().unwrap();
        let t = std::time::Instant::now();
        let g = guest::build(dir.path(), &guest::GuestOptions::with_every_problem(d));
        eprintln!(
            "{} {:?} markers={} keep={}",
            d.name(),
            t.elapsed(),
            g.markers.len(),
            g.keep.len()
        );
    }
}
#[path = "common/disk.rs"]
mod disk;
