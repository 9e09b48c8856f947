/* QEMU TCG plugin for scripts/tcg-profile.sh: guest instructions executed per translation block,
 * counted for blocks that start at or above min= (the kernel's half of the address space) and
 * written to out= as "vaddr instructions" lines. The file is rewritten every 250 ms as well as at
 * exit, because the harness may end QEMU with SIGKILL. Counters are bumped inline without locks:
 * with several vCPUs a few increments can be lost, which a profile can afford. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <qemu-plugin.h>

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

#define SLOTS (1u << 20) /* open addressing; a kernel boot translates ~60k distinct blocks */
struct slot { uint64_t vaddr; uint64_t insns; };
static struct slot *table;
static uint64_t min_addr = 0xffffffff80000000ull;
static const char *out_path = "tbprof.out";

/* The counter of the block starting at va (translation runs under QEMU's translation lock). */
static struct slot *slot_of(uint64_t va) {
    uint64_t h = (va * 0x9E3779B97F4A7C15ull) >> 44;
    for (;;) {
        struct slot *s = &table[h & (SLOTS - 1)];
        if (s->vaddr == va || s->vaddr == 0) { s->vaddr = va; return s; }
        h++;
    }
}

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
    uint64_t va = qemu_plugin_tb_vaddr(tb);
    if (va < min_addr) return;
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &slot_of(va)->insns,
                                             qemu_plugin_tb_n_insns(tb));
}

static void dump(void) {
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", out_path);
    FILE *f = fopen(tmp, "w");
    if (!f) return;
    for (uint32_t i = 0; i < SLOTS; i++)
        if (table[i].vaddr && table[i].insns)
            fprintf(f, "%llx %llu\n", (unsigned long long)table[i].vaddr, (unsigned long long)table[i].insns);
    fclose(f);
    rename(tmp, out_path);
}
static void on_qemu_exit(qemu_plugin_id_t id, void *p) { dump(); }
static void *dumper(void *p) { for (;;) { usleep(250000); dump(); } return NULL; }

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info,
                                           int argc, char **argv) {
    for (int i = 0; i < argc; i++) {
        if (!strncmp(argv[i], "out=", 4)) out_path = argv[i] + 4;
        if (!strncmp(argv[i], "min=", 4)) min_addr = strtoull(argv[i] + 4, NULL, 16);
    }
    table = calloc(SLOTS, sizeof *table);
    if (!table) return -1;
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    qemu_plugin_register_atexit_cb(id, on_qemu_exit, NULL);
    pthread_t t;
    return pthread_create(&t, NULL, dumper, NULL);
}
