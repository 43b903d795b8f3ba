/* Test-only LD_PRELOAD shim between the `v4l` crate (under nokhwa) and
 * PipeWire's V4L2 emulation (libpw-v4l2.so), for the camera tests on
 * machines with no kernel V4L2. Compiled by tests/src/video.rs at test time;
 * never part of Seer itself. It papers over three incompatibilities:
 *  1. the v4l crate calls syscall(SYS_ioctl, ...), which an LD_PRELOAD'ed
 *     ioctl() never sees: route it through ioctl();
 *  2. pipewire-v4l2 has no VIDIOC_ENUM_FRAMEINTERVALS: answer 30 fps;
 *  3. VIDIOC_DQBUF can say EAGAIN right after poll() said ready: retry
 *     (for up to 1 s, then report EAGAIN, which reads as a lost camera). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <string.h>
#include <sys/syscall.h>
#include <linux/videodev2.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <time.h>

/* The v4l crate calls syscall(SYS_ioctl, ...), which pipewire-v4l2's
 * preload never sees: route it through ioctl(). */
long syscall(long n, ...) {
    va_list ap; va_start(ap, n);
    long a[6]; for (int i = 0; i < 6; i++) a[i] = va_arg(ap, long);
    va_end(ap);
    if (n == SYS_ioctl) {
        int fd = (int)a[0]; unsigned long req = (unsigned long)a[1]; void *arg = (void *)a[2];
        if (req == VIDIOC_ENUM_FRAMEINTERVALS) {
            int r = ioctl(fd, req, arg);
            if (r == 0) return 0;
            struct v4l2_frmivalenum *f = arg;
            if (f->index != 0) { errno = EINVAL; return -1; }
            f->type = V4L2_FRMIVAL_TYPE_DISCRETE;
            f->discrete.numerator = 1; f->discrete.denominator = 30;
            return 0;
        }
        if (req == VIDIOC_DQBUF) {
            for (int i = 0; i < 200; i++) {
                int r = ioctl(fd, req, arg);
                if (r == 0 || errno != EAGAIN) return r;
                struct timespec ts = {0, 5000000}; nanosleep(&ts, 0);
            }
            errno = EAGAIN; return -1;
        }
        return ioctl(fd, req, arg);
    }
    static long (*real)(long, ...) = 0;
    if (!real) real = dlsym(RTLD_NEXT, "syscall");
    return real(n, a[0], a[1], a[2], a[3], a[4], a[5]);
}
