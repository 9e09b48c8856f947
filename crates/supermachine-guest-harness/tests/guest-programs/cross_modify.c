/* Cross-modifying code the way Linux's text_poke_bp() patches live kernel text, in user space.
 *
 * A patcher thread flips a 2-byte site between `jmp +0` and a 2-byte nop: int3 on the first
 * byte, sync, second byte, sync, first byte, sync, where "sync" is a core-serializing membarrier
 * (an IPI that makes every CPU running this process serialize). An executor thread calls the
 * site in a loop; its SIGTRAP handler skips the int3. On a coherent machine the executor can
 * trap only while a patch is in flight: a trap in a call that began after the last patch had
 * finished means it ran bytes that memory no longer holds.
 *
 * Usage: cross_modify SECONDS. Prints one "XMC ..." line; exits 1 if any trap was stale. */
#define _GNU_SOURCE
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

/* <linux/membarrier.h>, spelled out so only libc headers are needed */
#define MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE (1 << 5)
#define MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE (1 << 6)

static unsigned char *site;
static atomic_long calls, traps_in_flight, traps_stale;
/* `calls` when the last patch had finished; LONG_MAX / 2 while one is in flight */
static atomic_long done_calls = LONG_MAX / 2;
static atomic_int stop;

static void sync_cores(void) {
    if (syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED_SYNC_CORE, 0, 0)) {
        perror("membarrier");
        exit(2);
    }
}

static void on_trap(int sig, siginfo_t *si, void *ucv) {
    ucontext_t *uc = ucv;
    (void)sig;
    (void)si;
    if (uc->uc_mcontext.gregs[REG_RIP] - 1 != (greg_t)site) _exit(3);
    /* `calls` counts returns, so calls > done_calls means this call began after the patch
     * that was last in flight had finished (and after its final sync) */
    if (atomic_load(&calls) > atomic_load(&done_calls))
        atomic_fetch_add(&traps_stale, 1);
    else
        atomic_fetch_add(&traps_in_flight, 1);
    uc->uc_mcontext.gregs[REG_RIP] = (greg_t)site + 2; /* both variants fall through */
}

static void *executor(void *unused) {
    void (*f)(void) = (void (*)(void))site;
    (void)unused;
    while (!atomic_load(&stop)) {
        f();
        atomic_fetch_add(&calls, 1);
    }
    return NULL;
}

int main(int argc, char **argv) {
    static const unsigned char variant[2][2] = { { 0xeb, 0x00 }, { 0x66, 0x90 } };
    double seconds = argc > 1 ? atof(argv[1]) : 5;
    struct timespec t0, t;
    long patches = 0;
    pthread_t th;
    struct sigaction sa = { .sa_sigaction = on_trap, .sa_flags = SA_SIGINFO };

    site = mmap(NULL, 4096, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (site == MAP_FAILED) { perror("mmap"); return 2; }
    /* the site, then 300 nops (a block long enough to take a while to translate), then ret */
    memcpy(site, variant[0], 2);
    memset(site + 2, 0x90, 300);
    site[302] = 0xc3;
    if (syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE, 0, 0)) {
        perror("membarrier register");
        return 2;
    }
    sigaction(SIGTRAP, &sa, NULL);
    pthread_create(&th, NULL, executor, NULL);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do {
        const unsigned char *next = variant[(patches + 1) & 1];
        long c;
        atomic_store(&done_calls, LONG_MAX / 2);
        site[0] = 0xcc;
        sync_cores();
        site[1] = next[1];
        sync_cores();
        site[0] = next[0];
        sync_cores();
        c = atomic_load(&calls);
        atomic_store(&done_calls, c);
        patches++;
        while (atomic_load(&calls) < c + 20) /* let the executor run the patched site */
            ;
        clock_gettime(CLOCK_MONOTONIC, &t);
    } while ((t.tv_sec - t0.tv_sec) + (t.tv_nsec - t0.tv_nsec) / 1e9 < seconds);
    atomic_store(&stop, 1);
    pthread_join(th, NULL);
    printf("XMC patches=%ld calls=%ld traps_in_flight=%ld traps_stale=%ld\n", patches,
           atomic_load(&calls), atomic_load(&traps_in_flight), atomic_load(&traps_stale));
    return atomic_load(&traps_stale) ? 1 : 0;
}
