/* judge_checks.h: one call's buffers and checks, for judge.c (static functions, included
 * after its helpers like judge_setup.h and judge_watch.h).
 *
 * - prepare_private / publish_inputs / snapshot_outputs: fresh inputs made in private,
 *   copied to the shared buffers while the runner is stopped, outputs copied back to
 *   private memory the moment DONE arrives;
 * - verify: inputs untouched, nothing past the outputs, the family's fast check (every
 *   call) and full check (at once, or kept at random for after the run);
 * - keep_for_full_check / full_check_kept: the reservoir of calls compared in full.
 */
#ifndef HPCQ_JUDGE_CHECKS_H
#define HPCQ_JUDGE_CHECKS_H

/* Fresh inputs into the judge's private memory, outputs poisoned. Nothing of the new
 * inputs is visible to the child yet. */
static void prepare_private(judge *J, const hq_shape *s)
{
    hq_rng rng;
    hq_rng_seed(&rng, input_seed(J));
    J->fam->fill_inputs(s, J->priv, &rng);
    for (int i = 0; i < J->fam->nbufs; i++)
        if (J->fam->buf_is_output[i])
            memset(J->shared[i], 0xff, J->cap[i]); /* all-ones bytes are NaN doubles/floats */
}

/* With the runner stopped (freeze_runner): nothing of the child can look at the new
 * inputs until the call's clock has started and it is let go on. */
static void publish_inputs(judge *J, const hq_shape *s)
{
    for (int i = 0; i < J->fam->nbufs; i++)
        if (!J->fam->buf_is_output[i])
            memcpy(J->shared[i], J->priv[i], J->fam->buf_bytes(s, i));
}

/* Right after DONE, before anything else: a private copy of the outputs, so a writer that
 * goes on after DONE cannot change what is verified. */
static void snapshot_outputs(judge *J, const hq_shape *s)
{
    for (int i = 0; i < J->fam->nbufs; i++)
        if (J->fam->buf_is_output[i])
            memcpy(J->priv[i], J->shared[i], J->fam->buf_bytes(s, i));
}

/* Offer the call just verified to the reservoir of calls compared in full after the run
 * (algorithm R): after m offers each of them is kept with probability k/m, drawn from
 * getrandom() after the call returned, so the candidate cannot tell which calls will be
 * compared. Comparing after the run keeps the judge's O(n^3) reference out of the gaps
 * between calls, where it slowed the kernel's next calls (a core left idle for ms). */
static int keep_for_full_check(judge *J, const hq_shape *s, const char *what)
{
    long m = ++J->offered, k = J->o.full_keep, slot = J->nkeep;
    if (slot >= k) {
        slot = (long)(fresh_random() % (uint64_t)m);
        if (slot >= k)
            return 0;
    } else
        J->nkeep++;
    kept_call *kc = &J->keep[slot];
    for (int i = 0; i < J->fam->nbufs; i++) {
        if (!kc->bufs[i] && !(kc->bufs[i] = malloc(J->cap[i])))
            return fail(J, "infra_error", "out of memory keeping a call"), -1;
        memcpy(kc->bufs[i], J->priv[i], J->fam->buf_bytes(s, i));
    }
    kc->index = call_index(J);
    snprintf(kc->what, sizeof kc->what, "%s", what);
    return 0;
}

/* After the last timed call: the kept calls compared in full with the judge's product. */
static void full_check_kept(judge *J)
{
    char msg[512];
    for (int c = 0; c < J->nkeep && !J->r.status; c++) {
        double ratio;
        int rc = J->fam->full_check(&J->o.dims, J->keep[c].bufs, &ratio, msg, sizeof msg);
        J->r.full_checks++;
        if (dvec_push(&J->r.full_calls, (double)J->keep[c].index))
            rc = -2, snprintf(msg, sizeof msg, "out of memory");
        if (rc == 0)
            J->r.full_max = isnan(J->r.full_max) ? ratio : fmax(J->r.full_max, ratio);
        else if (rc == -2)
            fail(J, "infra_error", "%s", msg);
        else
            fail(J, "wrong_result", "%s on %s (compared in full after the run)", msg,
                 J->keep[c].what);
    }
}

/* Inputs intact, nothing written past the outputs, then the family's checks on the
 * snapshot. `full`: 1 compare in full now, 0 never, -1 offer it to the reservoir of calls
 * compared in full after the run. */
static int verify(judge *J, const hq_shape *s, const char *what, int full)
{
    const hq_judge_family *F = J->fam;
    char msg[512];
    for (int i = 0; i < F->nbufs; i++) {
        size_t used = F->buf_bytes(s, i);
        if (!F->buf_is_output[i]) {
            if (memcmp(J->shared[i], J->priv[i], used) != 0)
                return fail(J, "violation", "modified its const input %s during %s",
                            F->buf_names[i], what), -1;
            continue;
        }
        const unsigned char *tail = (const unsigned char *)J->shared[i] + used;
        for (size_t j = 0; j < J->cap[i] - used; j++)
            if (tail[j] != 0xff)
                return fail(J, "wrong_result", "wrote past the end of %s during %s",
                            F->buf_names[i], what), -1;
    }
    hq_rng probe; /* drawn only now, after the candidate returned */
    hq_rng_seed(&probe, fresh_random());
    double ratio;
    int rc = F->fast_check(s, J->priv, &probe, &ratio, msg, sizeof msg);
    if (rc == 0)
        J->r.freivalds_max = isnan(J->r.freivalds_max) ? ratio : fmax(J->r.freivalds_max, ratio);
    if (rc == 0 && full < 0)
        rc = keep_for_full_check(J, s, what);
    if (rc == 0 && full > 0) {
        J->r.full_checks++;
        rc = F->full_check(s, J->priv, &ratio, msg, sizeof msg);
        if (rc == 0)
            J->r.full_max = isnan(J->r.full_max) ? ratio : fmax(J->r.full_max, ratio);
    }
    if (rc == -2)
        return fail(J, "infra_error", "%s", msg), -1;
    if (rc != 0)
        return fail(J, "wrong_result", "%s on %s", msg, what), -1;
    return 0;
}

#endif
