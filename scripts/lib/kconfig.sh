# Kconfig fragments: shared by the kernel recipe (scripts/lib/kernel.sh) and the busybox recipe.
# shellcheck shell=bash
# Needs scripts/lib/common.sh.

# fragment_options FILE...: every CONFIG_X=value or "# CONFIG_X is not set" line, normalised.
fragment_options() {
    sed -n -e 's/^\(CONFIG_[A-Za-z0-9_]*=.*\)$/\1/p' \
           -e 's/^# \(CONFIG_[A-Za-z0-9_]*\) is not set$/\1=n/p' "$@"
}

# assert_fragments WHAT CONFIG FRAGMENT...: a dependency that is not met makes Kconfig drop an
# option silently; refuse that. Every option of the fragments must hold in CONFIG (a .config).
assert_fragments() {
    local what=$1 config=$2; shift 2
    local missing=0 opt want got
    while IFS= read -r opt; do
        want=${opt#*=}; opt=${opt%%=*}
        got=$(grep -E "^$opt=" "$config" | cut -d= -f2- || true)
        [ -n "$got" ] || got=n
        if [ "$got" != "$want" ]; then
            echo "error: $opt: the fragments ask for $want, the $what config has $got" >&2
            missing=1
        fi
    done < <(fragment_options "$@")
    [ $missing = 0 ] || die "the $what config does not hold every requested option (see above)"
}
