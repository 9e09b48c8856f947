//! Prints what was embedded, so the test can check which bytes the build picked.
//!
//! `consumer-app`               print KEY=VALUE lines and one `ASSET` line per payload
//! `consumer-app extract DIR`   extract_all_to(DIR) and print the paths written
use std::hint::black_box;
use supermachine_kernel_x86_64 as guest;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 3 && args[1] == "extract" {
        for p in guest::extract_all_to(std::path::Path::new(&args[2])).expect("extract_all_to") {
            println!("{}", p.display());
        }
        return;
    }
    let here: &'static [u8] = black_box(guest::KERNEL_BYTES);
    let there: &'static [u8] = kernel_user::kernel_bytes();
    println!("KERNEL_LEN={}", guest::KERNEL_LEN);
    println!("KERNEL_SHA256={}", guest::KERNEL_SHA256);
    println!("KERNEL_BYTES_LEN={} {}", here.len(), there.len());
    println!("SAME_KERNEL_STATIC={}", here.as_ptr() == there.as_ptr());
    println!("SAME_BUSYBOX_STATIC={}", black_box(guest::BUSYBOX_BYTES).as_ptr() == kernel_user::busybox_bytes().as_ptr());
    println!("KERNEL_VERSION={}", guest::KERNEL_VERSION);
    println!("BUILD_ID={}", guest::BUILD_ID);
    println!("ASSETS_TOTAL_LEN={}", kernel_user::assets_total_len());
    for a in black_box(guest::ASSETS) {
        println!("ASSET {} {} {} {} {}", a.name, a.file_name, black_box(a.bytes).len(), a.sha256, a.executable);
    }
}
