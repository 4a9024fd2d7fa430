"""``SafeCheckpointHook``: mmengine's ``CheckpointHook`` with kill-proof saving and exact
resume. Every shipped config uses it (``configs/_base_/default_runtime.py``).

Saving (local folders), in this order, so that a ``kill -9``, a crash or a full disk at any
moment leaves the previous checkpoint and a ``last_checkpoint`` naming a complete file:

1. write ``.<name>.tmp-<pid>`` in the checkpoint folder, ``fsync`` it;
2. ``os.replace`` it to ``<name>`` and ``fsync`` the folder;
3. replace ``last_checkpoint`` the same way;
4. only then delete the checkpoints beyond ``max_keep_ckpts``.

(mmengine 0.10.7 deletes the oldest checkpoint first, then writes the new one in place, then
``last_checkpoint``: a kill during the write leaves a truncated file and a ``last_checkpoint``
naming a deleted one.) Best checkpoints (``save_best``) go the same way: the new
``best_<key>_iter_<n>.pth`` is written to a temporary file and renamed into place, the regular
checkpoint re-saved with the new best's name, and only then is the previous best deleted
(mmengine deletes the previous best first, then writes the new one in place: a failed save
leaves no complete best checkpoint). Other storage backends keep mmengine's behaviour.

Exact resume: a run killed at any iteration and resumed with ``--resume`` continues with the
same per-iteration losses as the uninterrupted run (bit for bit on CPU for deterministic ops).
The checkpoint holds (``checkpoint['resume_state']``) the Python/numpy/torch/CUDA random states
of every rank at the save, taken after the iteration's hooks; what else the run depends on is
restored by mmengine (weights, optimizer, schedulers, message hub, iteration) or reproduced:

- the data: mmengine's ``IterBasedTrainLoop`` re-reads the ``iter`` batches already trained
  so that the sampler position and the loader workers' random states (seeded from the run's
  seed, advanced one batch at a time) are the same as in the uninterrupted run. This hook does
  that re-read itself, at ``before_train_epoch``, and restores the random states *after* it:
  in-process loading (``num_workers=0``) and the model's random ops (dropout, the point
  sampling of the mask losses, ...) draw from the main process's global generators;
- validation during training no longer moves the training random streams: the states are
  saved at ``before_val`` and put back at ``after_val`` (the checkpoint of an iteration is
  written before that iteration's validation, so the resumed run never re-runs it).

``tools/train.py --resume`` picks the newest checkpoint that loads
(:func:`~mmseg_ovseg.engine.resume.find_resumable_checkpoint`); so does this hook when a
runner is built with ``resume=True`` and no ``load_from``.
"""
import os
import os.path as osp

from mmengine.dist import all_gather_object, get_rank, get_world_size, is_main_process
from mmengine.fileio.backends import LocalBackend
from mmengine.hooks import CheckpointHook
from mmseg.registry import HOOKS

from .resume import (
    TMP_MARK,
    atomic_write_text,
    capture_rng_state,
    find_resumable_checkpoint,
    fsync_dir,
    fsync_file,
    restore_rng_state,
)

__all__ = ['SafeCheckpointHook', 'RESUME_STATE_KEY']

RESUME_STATE_KEY = 'resume_state'


class _ReplayedIterator:
    """Wraps the train loop's data iterator after this hook has re-read the first ``skip``
    batches itself: the loop's own re-read (``skip`` calls to ``next``) becomes free."""

    def __init__(self, iterator, skip: int):
        self._iterator = iterator
        self._skip = skip

    def __iter__(self):
        return self

    def __next__(self):
        if self._skip > 0:
            self._skip -= 1
            return None
        return next(self._iterator)

    def __getattr__(self, name):
        return getattr(self._iterator, name)


@HOOKS.register_module()
class SafeCheckpointHook(CheckpointHook):
    """``CheckpointHook`` (same arguments) with atomic, durable saving and exact resume.

    Args:
        exact_resume (bool): store the random states in the checkpoints and restore them on
            resume, re-read the trained batches before restoring them, and keep validation
            from moving the training random streams. Defaults to True.
        **kwargs: ``CheckpointHook``'s arguments.
    """

    def __init__(self, *args, exact_resume: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.exact_resume = exact_resume
        self._pending_rng = None  # per-rank states gathered for the save in progress
        self._val_rng = None  # training states put aside during validation
        self._loaded_state = None  # (iter, resume_state) of the checkpoint loaded last
        self._training = False

    # --- resume --------------------------------------------------------------------------

    def before_run(self, runner) -> None:
        """``resume=True`` without ``load_from``: pick the newest loadable checkpoint (mmengine
        would take ``last_checkpoint`` blindly, and fail on an empty or stale one)."""
        if getattr(runner, '_resume', False) and getattr(runner, '_load_from', None) is None:
            choice = find_resumable_checkpoint(runner.work_dir)
            if choice is None:
                runner.logger.info(f'resume: no checkpoint in {runner.work_dir}; training '
                                   'from scratch')
                runner._resume = False
            else:
                runner._load_from = choice.path

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        meta = checkpoint.get('meta') or {}
        self._loaded_state = (meta.get('iter'), checkpoint.get(RESUME_STATE_KEY))

    def before_train(self, runner) -> None:
        super().before_train(runner)
        self._training = True
        self._atomic = isinstance(self.file_backend, LocalBackend) or isinstance(
            getattr(self.file_backend, 'client', None), LocalBackend)
        if self._atomic and is_main_process():
            self._remove_stale_temporaries(runner)

    def before_train_epoch(self, runner) -> None:
        """On the first epoch after a resume: re-read the trained batches, then restore the
        random states saved with the checkpoint."""
        loaded, self._loaded_state = self._loaded_state, None
        if loaded is None or not self.exact_resume or runner.iter == 0:
            return
        ckpt_iter, state = loaded
        if ckpt_iter != runner.iter:  # `load_from` (weights only), not a resume
            return
        if state is None:
            runner.logger.warning(
                'resume: the checkpoint holds no random states (not saved by '
                'SafeCheckpointHook): the resumed run will not repeat the uninterrupted one '
                'exactly')
            return
        states = state.get('rng', [])
        rank, world_size = get_rank(), get_world_size()
        if len(states) != world_size:
            runner.logger.warning(
                f'resume: the checkpoint holds the random states of {len(states)} processes, '
                f'this run has {world_size}: random states not restored')
            return
        loop = runner.train_loop
        skip = getattr(loop, '_iter', 0)
        if hasattr(loop, 'dataloader_iterator') and skip > 0:
            runner.logger.info(f'resume: re-reading the {skip} trained batches (sampler '
                               'position and loader random states)')
            for _ in range(skip):
                next(loop.dataloader_iterator)
            loop.dataloader_iterator = _ReplayedIterator(loop.dataloader_iterator, skip)
        restore_rng_state(states[rank])
        runner.logger.info(f'resume: random states restored (iteration {runner.iter})')

    # --- validation leaves the training random streams alone ------------------------------

    def before_val(self, runner) -> None:
        if self._training and self.exact_resume:
            self._val_rng = capture_rng_state()

    def after_val(self, runner) -> None:
        if self._val_rng is not None:
            restore_rng_state(self._val_rng)
            self._val_rng = None

    def after_train(self, runner) -> None:
        self._training = False
        super().after_train(runner)

    # --- saving --------------------------------------------------------------------------

    def _training_rng(self):
        # during validation (best checkpoints), the states training continues from
        return self._val_rng if self._val_rng is not None else capture_rng_state()

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if not self.exact_resume:
            return
        # best checkpoints are saved by rank 0 alone (no gather): its own states only
        states = self._pending_rng or [self._training_rng()]
        checkpoint[RESUME_STATE_KEY] = dict(rng=states)

    def _save_checkpoint_with_step(self, runner, step, meta):
        if self.exact_resume:  # collective: every rank reaches here, only rank 0 writes
            state = self._training_rng()
            self._pending_rng = (all_gather_object(state) if get_world_size() > 1 else [state])
        try:
            if getattr(self, '_atomic', False):
                self._save_atomic(runner, step, meta)
            else:
                super()._save_checkpoint_with_step(runner, step, meta)
        finally:
            self._pending_rng = None

    def _save_atomic(self, runner, step, meta):
        # bookkeeping as in CheckpointHook, but the old file is deleted after the new one is
        # in place and named by last_checkpoint
        outdated = []
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids
                                            and self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                outdated.append(self.keep_ckpt_ids.popleft())
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))

        ckpt_filename = self.filename_tmpl.format(step)
        final = self.file_backend.join_path(self.out_dir, ckpt_filename)
        self.last_ckpt = final
        runner.message_hub.update_info('last_ckpt', final)
        written = self._write_atomic(
            runner, ckpt_filename, save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler, meta=meta, by_epoch=self.by_epoch,
            **self.args)
        if not written:
            return
        atomic_write_text(osp.join(runner.work_dir, 'last_checkpoint'), final)
        for old in outdated:
            path = self.file_backend.join_path(self.out_dir, self.filename_tmpl.format(old))
            if old != step and osp.isfile(path):
                os.remove(path)
            elif old != step and osp.isdir(path):  # deepspeed saves folders
                self.file_backend.rmtree(path)

    def _write_atomic(self, runner, filename: str, **kwargs) -> bool:
        """``runner.save_checkpoint(out_dir, filename, **kwargs)`` through a temporary file in
        the same folder, fsynced and renamed into place; on failure the temporary file is
        removed and ``out_dir/filename`` is untouched. Returns whether this rank wrote (rank 0;
        ``save_checkpoint`` is collective where the model is sharded)."""
        final = self.file_backend.join_path(self.out_dir, filename)
        folder, name = osp.split(filename)
        tmp_filename = osp.join(folder, f'.{name}{TMP_MARK}{os.getpid()}')
        tmp = self.file_backend.join_path(self.out_dir, tmp_filename)
        try:
            runner.save_checkpoint(  # rank 0 only (master_only)
                self.out_dir, tmp_filename, self.file_client_args,
                backend_args=self.backend_args, **kwargs)
            if not is_main_process():
                return False
            fsync_file(tmp)
            os.replace(tmp, final)
        except BaseException:
            if is_main_process() and osp.exists(tmp):
                os.remove(tmp)
            raise
        fsync_dir(osp.dirname(final))
        return True

    def _save_best_checkpoint(self, runner, metrics) -> None:
        """``CheckpointHook._save_best_checkpoint`` with the new best written atomically and
        the previous best deleted last (after the regular checkpoint naming the new best is
        in place)."""
        if not self.save_best or not getattr(self, '_atomic', False):
            return super()._save_best_checkpoint(runner, metrics)
        if self.by_epoch:
            ckpt_filename = self.filename_tmpl.format(runner.epoch)
            cur_type, cur_time = 'epoch', runner.epoch
        else:
            ckpt_filename = self.filename_tmpl.format(runner.iter)
            cur_type, cur_time = 'iter', runner.iter
        meta = dict(epoch=runner.epoch, iter=runner.iter)
        if 'auto' in self.key_indicators:
            self._init_rule(self.rules, [list(metrics.keys())[0]])

        single = len(self.key_indicators) == 1
        updated = False
        superseded = []  # previous best files, deleted once everything new is in place
        for key_indicator, rule in zip(self.key_indicators, self.rules):
            key_score = metrics[key_indicator]
            score_key = 'best_score' if single else f'best_score_{key_indicator}'
            path_key = 'best_ckpt' if single else f'best_ckpt_{key_indicator}'
            previous = self.best_ckpt_path if single else self.best_ckpt_path_dict[key_indicator]
            best_score = runner.message_hub.get_info(score_key, self.init_value_map[rule])
            if key_score is None or not self.is_better_than[key_indicator](key_score,
                                                                          best_score):
                continue
            best_name = f'best_{key_indicator}_{ckpt_filename}'.replace('/', '_')
            final = self._write_best(runner, best_name, meta, key_score, score_key, path_key)
            updated = True
            if single:
                self.best_ckpt_path = final
            else:
                self.best_ckpt_path_dict[key_indicator] = final
            if previous and previous != final:
                superseded.append(previous)
            runner.logger.info(f'The best checkpoint with {key_score:0.4f} {key_indicator} '
                               f'at {cur_time} {cur_type} is saved to {best_name}.')

        # re-save the regular checkpoint so that it names the new best (as mmengine does)
        if updated and self.last_ckpt is not None:
            self._save_checkpoint_with_step(runner, cur_time, meta)
        if not is_main_process():
            return
        self._remove_superseded(runner, superseded)

    def _write_best(self, runner, best_name: str, meta: dict, key_score, score_key: str,
                    path_key: str) -> str:
        """Write the best checkpoint ``best_name`` atomically and return its path.

        The best checkpoint itself records its score and name (as in mmengine): they are set
        in the message hub before the save and put back to the previous values if it fails.
        """
        final = self.file_backend.join_path(self.out_dir, best_name)
        saved_info = {k: runner.message_hub.runtime_info.get(k) for k in (score_key, path_key)}
        runner.message_hub.update_info(score_key, key_score)
        runner.message_hub.update_info(path_key, final)
        try:
            self._write_atomic(runner, best_name, save_optimizer=False,
                               save_param_scheduler=False, meta=meta, by_epoch=False)
        except BaseException:
            for k, v in saved_info.items():
                if v is None:
                    runner.message_hub.runtime_info.pop(k, None)
                else:
                    runner.message_hub.update_info(k, v)
            raise
        return final

    def _remove_superseded(self, runner, paths) -> None:
        """Delete the previous best checkpoints (files, or deepspeed's folders)."""
        for path in paths:
            if osp.isfile(path):
                os.remove(path)
            elif osp.isdir(path):  # deepspeed saves folders
                self.file_backend.rmtree(path)
            else:
                continue
            fsync_dir(osp.dirname(path))
            runner.logger.info(f'The previous best checkpoint {path} is removed')

    def _remove_stale_temporaries(self, runner) -> None:
        """Delete the temporary files of saves killed midway (never loaded by anything)."""
        folders = {self.out_dir, osp.dirname(self.file_backend.join_path(
            self.out_dir, self.filename_tmpl.format(0))), runner.work_dir}
        for folder in folders:
            if not osp.isdir(folder):
                continue
            for name in os.listdir(folder):
                if name.startswith('.') and TMP_MARK in name:
                    path = osp.join(folder, name)
                    if osp.isfile(path):
                        runner.logger.warning(f'removing {path}, left by a save that was '
                                              'interrupted')
                        os.remove(path)

