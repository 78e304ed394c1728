# -*- coding: utf-8 -*-
# Copyright: contributors to the mikopbx.marketplace collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    # The attributes every mikopbx.marketplace module has. Each module states its own check_mode and
    # diff_mode support (and details); the descriptions and the action group are the same for all.
    DOCUMENTATION = r"""
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
  action_group:
    description: Use C(group/mikopbx.marketplace.mikopbx) in C(module_defaults) to set defaults for this module.
    support: full
    membership:
      - mikopbx.marketplace.mikopbx
"""
