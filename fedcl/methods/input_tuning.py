"""Input tuning (the default): learn the input transform and the head; the backbone stays frozen.

With a statistical head (``ncm``, ``lda``, ``ridge``) input tuning is *first-session
adaptation*: during the first ``adapt_tasks`` tasks the transform trains with a
temporary linear head (which also makes the predictions during those tasks). When the
first later task starts, the transform is frozen, the statistical head replaces the
temporary one, and the adaptation tasks' data is encoded once with the final transform
into the head's sums; every later task only gathers statistics (one forward pass per
sample, no gradient). No statistic is ever computed with an older transform.

Cost: the adaptation tasks' samples take ``epochs`` forward+backward passes plus one
forward pass; every other sample one forward pass. Single device only for now: the
federated version (the adaptation rounds, then every client encoding its adaptation
data with the final global transform) comes with the federated transport.
"""

from __future__ import annotations

from fedcl.heads.base import Head
from fedcl.heads.linear import LinearHead
from fedcl.methods.base import METHODS, Method, freeze_transform, head_group


@METHODS.register("input_tuning")
class InputTuning(Method):
    name = "input_tuning"

    def __init__(self, adapt_tasks: int = 1) -> None:
        super().__init__()
        if adapt_tasks < 1:
            raise ValueError("adapt_tasks must be at least 1")
        self.adapt_tasks = adapt_tasks
        #: the statistical head while a temporary linear head trains with the transform
        self.statistical_head: Head | None = None
        self.adapted_tasks: set[int] = set()
        self.adaptation_stream: list = []

    def configure(self, model, settings):
        transform = [p for p in model.transform.parameters()]
        for p in transform:
            p.requires_grad_(True)
        groups = [{"params": transform, "lr": settings.lr, "name": "transform"}] if transform else []
        if model.head.gathers_statistics and transform:
            head = model.head
            self.statistical_head = head
            model.head = LinearHead(head.feature_dim, head.num_classes, head.task_classes).to(transform[0].device)
        return groups + head_group(model, settings)

    @property
    def adapting(self) -> bool:
        return self.statistical_head is not None

    def before_experience(self, learner, experience) -> None:
        if self.adapting and experience.task_id not in self.adapted_tasks and len(self.adapted_tasks) >= self.adapt_tasks:
            self.finish_adaptation(learner)

    def after_experience(self, learner, experience) -> None:
        if self.adapting:
            self.adapted_tasks.add(experience.task_id)
            self.adaptation_stream.append(experience)

    def finish_adaptation(self, learner) -> None:
        """Freeze the transform, install the statistical head, encode the adaptation tasks' data once."""
        model = learner.model
        freeze_transform(model)
        model.head, self.statistical_head = self.statistical_head, None
        learner.param_groups = []
        for experience in self.adaptation_stream:
            learner.accumulate_statistics(experience)
        self.adaptation_stream = []
