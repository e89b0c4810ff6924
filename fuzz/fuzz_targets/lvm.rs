#![no_main]
//! LVM2 on arbitrary bytes: taken as a PV (label, PV header, metadata area
//! headers and their circular text, the VG metadata parsed and checked, the
//! VG assembled and its LVs mapped), and taken as metadata text directly.
//! Beyond "no panic": a text that parses is written back and must parse to the
//! same model, and every LV mapped lies inside the disk.

use std::sync::Arc;

use imgsan::disk::lvm::{self, label, mda, vg::Vg, Candidate, LvDisk};
use imgsan::disk::{Disk, MemDisk};
use libfuzzer_sys::fuzz_target;

fn text_round_trip(text: &[u8]) {
    let Ok(vg) = Vg::parse(text) else { return };
    // imgsan writes metadata back only for VGs it supports (it refuses the rest,
    // thin pools among them), so only those must round-trip.
    if vg.check_supported().is_err() {
        return;
    }
    let out = vg.to_text("fuzz").expect("a parsed VG writes back");
    let again = Vg::parse(out.as_bytes()).expect("written metadata parses");
    assert_eq!(again.lvs, vg.lvs);
    assert_eq!(again.pvs, vg.pvs);
    assert_eq!(again.seqno, vg.seqno);
}

fuzz_target!(|data: &[u8]| {
    text_round_trip(data);
    let disk: Arc<dyn Disk> = Arc::new(MemDisk::new(data.to_vec()));
    if let Ok(Some(l)) = label::read(disk.as_ref()) {
        let sector = l.to_sector().expect("a parsed label writes back");
        assert_eq!(label::parse(&sector, l.sector).expect("written label parses"), l);
        for a in &l.metadata_areas {
            if let Ok(h) = mda::read_header(disk.as_ref(), a.offset, a.size) {
                if let Ok(Some(t)) = mda::read_text(disk.as_ref(), &h) {
                    text_round_trip(&t);
                }
            }
        }
    }
    let c = [Candidate {
        volume: 0,
        name: "fuzz".into(),
        start: 0,
        len: disk.len(),
    }];
    if let Ok(found) = lvm::scan(&disk, &c) {
        let _ = found.summary();
        for v in &found.vgs {
            for l in &v.vg.lvs {
                let runs = v.runs(&found, l);
                let lv = LvDisk::new(disk.clone(), runs).expect("a scanned LV maps inside the disk");
                let mut b = [0u8; 16];
                if lv.len() >= 16 {
                    lv.read_at(lv.len() - 16, &mut b).expect("reads inside the LV succeed");
                }
            }
        }
    }
});
