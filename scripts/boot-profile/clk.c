/* smprof-clk: reads the guest's raw counter (x86_64 TSC / aarch64 CNTVCT_EL0) and writes
 * "<3>smprof: clk COUNT FREQ" to /dev/kmsg in one write, so the printk timestamp of that record
 * and the counter are taken at the same moment. Under QEMU `-icount shift=0` the counter is the
 * virtual clock since the first guest instruction (x86 TSC: 1 tick per ns, FREQ printed as 0;
 * aarch64: CNTFRQ_EL0 ticks per second), which anchors the printk clock. Used only by
 * scripts/boot-profile.sh; built with: cc -static -nostdlib -ffreestanding -fno-pie -no-pie -Os.
 */
typedef unsigned long u64;

#if defined(__x86_64__)
#define SYS_write 1
#define SYS_openat 257
#define SYS_exit 60
static long sys3(long n, long a, long b, long c) {
    long r;
    __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
    return r;
}
static u64 counter(void) {
    unsigned lo, hi;
    __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
    return ((u64)hi << 32) | lo;
}
static u64 freq(void) { return 0; }
#elif defined(__aarch64__)
#define SYS_write 64
#define SYS_openat 56
#define SYS_exit 93
static long sys3(long n, long a, long b, long c) {
    register long x8 __asm__("x8") = n, x0 __asm__("x0") = a, x1 __asm__("x1") = b, x2 __asm__("x2") = c;
    __asm__ volatile("svc 0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2) : "memory");
    return x0;
}
static u64 counter(void) {
    u64 v;
    __asm__ volatile("isb; mrs %0, cntvct_el0" : "=r"(v));
    return v;
}
static u64 freq(void) {
    u64 v;
    __asm__ volatile("mrs %0, cntfrq_el0" : "=r"(v));
    return v;
}
#else
#error "x86_64 or aarch64"
#endif

static char *put(char *p, u64 v) {
    char tmp[24];
    int n = 0;
    do { tmp[n++] = '0' + v % 10; v /= 10; } while (v);
    while (n) *p++ = tmp[--n];
    return p;
}

#if defined(__x86_64__)
__attribute__((force_align_arg_pointer))
#endif
void _start(void) {
    char buf[96];
    const char *pre = "<3>smprof: clk ";
    char *p = buf;
    long fd = sys3(SYS_openat, -100, (long)"/dev/kmsg", 1 /* O_WRONLY */);
    u64 c = counter();
    while (*pre) *p++ = *pre++;
    p = put(p, c);
    *p++ = ' ';
    p = put(p, freq());
    *p++ = '\n';
    if (fd >= 0) sys3(SYS_write, fd, (long)buf, p - buf);
    sys3(SYS_exit, 0, 0, 0);
    for (;;) {}
}
