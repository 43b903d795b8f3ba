/* ALSA prints every error of its own (and of its plugins) to stderr through
 * snd_lib_error. A board with no sound card gets a dozen "ALSA lib ..." lines
 * on every capture retry. This handler hands each message to Rust instead,
 * which logs it at debug level. It is C because the handler is variadic,
 * which stable Rust cannot define. */
#include <stdarg.h>
#include <stdio.h>
#include <alsa/asoundlib.h>

void seer_alsa_message(const char *file, int line, const char *text);

static void seer_alsa_handler(const char *file, int line, const char *function,
                              int err, const char *fmt, ...) {
    char text[512];
    va_list args;
    (void)function;
    (void)err;
    va_start(args, fmt);
    vsnprintf(text, sizeof text, fmt, args);
    va_end(args);
    seer_alsa_message(file, line, text);
}

int seer_alsa_quiet(void) { return snd_lib_error_set_handler(seer_alsa_handler); }
