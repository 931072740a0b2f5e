// One test per scenario, for tests/scenarios.rs (this machine) and
// tests/aarch64.rs (under qemu-user): each includes this file after
// defining `check_scenario(name)`; `every_scenario_has_a_test` holds the
// list against `all_scenarios()`.

macro_rules! scenario_tests {
    ($($test:ident => $name:literal,)*) => {
        $(
            #[test]
            fn $test() {
                check_scenario($name);
            }
        )*
        const TESTED: &[&str] = &[$($name),*];
    };
}

scenario_tests! {
    keep_objects => "keep-objects",
    keep_objects_incremental => "keep-objects-incremental",
    thread_joinable => "thread-joinable",
    thread_detached => "thread-detached",
    thread_signals_blocked => "thread-signals-blocked",
    thread_attr_sigmask => "thread-attr-sigmask",
    thread_sigev_timer => "thread-sigev-timer",
    thread_sigev_mq_notify => "thread-sigev-mq-notify",
    thread_pthread_exit => "thread-pthread-exit",
    thread_cancelled => "thread-cancelled",
    gc_pthread_create => "gc-pthread-create",
    fork_with_threads => "fork",
    two_thousand_threads => "2000-threads",
    before_main => "before-main",
    before_init_busy => "before-init-busy",
    dlopen => "dlopen",
    cache_stress => "cache-stress",
    cache_stress_purge => "cache-stress-purge",
    thread_churn => "thread-churn",
    exit_order => "exit-order",
    dlopen_loop => "dlopen-loop",
    out_of_memory => "out-of-memory",
    address_limit_after => "address-limit-after",
    address_limit_before => "address-limit-before",
    burst_trim => "burst-trim",
    burst_idle => "burst-idle",
    freed_blocks => "freed-blocks",
    init_implicit => "init-implicit",
    init_implicit_thread => "init-implicit-thread",
    init_late => "init-late",
    setting_interior_pointers_off => "setting-interior-pointers-off",
    setting_signals_moved => "setting-signals-moved",
    setting_fork_by_program => "setting-fork-by-program",
    setting_find_leak => "setting-find-leak",
    setting_pages_executable => "setting-pages-executable",
    setting_stack_bottom => "setting-stack-bottom",
    setting_markers => "setting-markers",
    setting_init_conf => "setting-init-conf",
    rss_flat => "rss-flat",
    rss_phases => "rss-phases",
    malloc_report => "malloc-report",
    edge_inputs => "edge-inputs",
}

#[test]
fn every_scenario_has_a_test() {
    for s in all_scenarios() {
        assert!(
            TESTED.contains(&s.name.as_str()),
            "scenario {} has no test here",
            s.name
        );
    }
}
