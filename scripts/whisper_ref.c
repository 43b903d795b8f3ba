/*
 * whisper.cpp's own path, for scripts/bench-voice.sh: load a ggml model,
 * read a 16 kHz mono 16-bit WAV, run whisper_full() the way whisper-cli
 * does (greedy, given threads, no timestamps), and print one JSON line
 * with the load and transcription times and the text.
 *
 * Built against the very whisper.cpp (1.8.3) and ggml static libraries
 * that whisper-rs-sys compiled for Seer, so the two columns differ only in
 * what Seer does around whisper_full().
 *
 * Usage: whisper_ref MODEL WAV THREADS AUDIO_CTX PROMPT
 *   AUDIO_CTX 0 = whisper-cli's default (the full 30 s window)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "whisper.h"

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static void quiet(enum ggml_log_level level, const char *text, void *user) {
    (void)level; (void)text; (void)user;
}

/* A canonical 44-byte-header PCM WAV, as sox writes it. */
static float *read_wav(const char *path, int *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 44, SEEK_SET);
    *n = (int)((size - 44) / 2);
    int16_t *pcm = malloc(sizeof(int16_t) * (size_t)*n);
    float *out = malloc(sizeof(float) * (size_t)*n);
    if (!pcm || !out || fread(pcm, 2, (size_t)*n, f) != (size_t)*n) {
        fclose(f);
        return NULL;
    }
    fclose(f);
    for (int i = 0; i < *n; i++) out[i] = pcm[i] / 32768.0f;
    free(pcm);
    return out;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: %s MODEL WAV THREADS AUDIO_CTX PROMPT\n", argv[0]);
        return 2;
    }
    whisper_log_set(quiet, NULL);
    int n = 0;
    float *pcm = read_wav(argv[2], &n);
    if (!pcm) {
        fprintf(stderr, "cannot read %s\n", argv[2]);
        return 1;
    }
    double t0 = now_ms();
    struct whisper_context_params cp = whisper_context_default_params();
    cp.use_gpu = false;
    struct whisper_context *ctx = whisper_init_from_file_with_params(argv[1], cp);
    if (!ctx) {
        fprintf(stderr, "cannot load %s\n", argv[1]);
        return 1;
    }
    double t1 = now_ms();
    struct whisper_full_params p = whisper_full_default_params(WHISPER_SAMPLING_GREEDY);
    p.n_threads = atoi(argv[3]);
    p.audio_ctx = atoi(argv[4]);
    p.no_timestamps = true;
    p.print_progress = false;
    p.print_realtime = false;
    p.print_timestamps = false;
    p.language = "en";
    if (argv[5][0]) p.initial_prompt = argv[5];
    if (whisper_full(ctx, p, pcm, n) != 0) {
        fprintf(stderr, "whisper_full failed\n");
        return 1;
    }
    double t2 = now_ms();
    printf("{\"engine\":\"whisper.cpp\",\"audio_ctx\":%d,\"load_ms\":%.1f,\"transcribe_ms\":%.1f,\"audio_ms\":%.1f,\"text\":\"",
           p.audio_ctx, t1 - t0, t2 - t1, n / 16.0);
    for (int i = 0; i < whisper_full_n_segments(ctx); i++) {
        for (const char *c = whisper_full_get_segment_text(ctx, i); *c; c++) {
            if (*c == '"' || *c == '\\') putchar('\\');
            if ((unsigned char)*c >= 0x20) putchar(*c);
        }
    }
    printf("\"}\n");
    whisper_free(ctx);
    free(pcm);
    return 0;
}
