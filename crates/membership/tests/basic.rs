mod common;
use common::*;
use icx_sim::run_seeds;

#[test]
fn forms_with_disk() {
    run_seeds(&[1], |seed| {
        let o = Opts::fast(3, 1);
        let (mut sim, _d) = build(seed, &o);
        form(&mut sim, &o);
        eprintln!("{}", dump(&sim));
        eprintln!("{}", dump_history(&sim, 1));
    });
}
