-- Argo CD health check for meshmig.io/MeshMigration.
--
-- Install it as `resource.customizations.health.meshmig.io_MeshMigration` in argocd-cm
-- (see argocd-cm-patch.yaml beside this file and docs/gitops.md). Argo CD calls it with the
-- live object as `obj` and reads `status` and `message` from the table it returns.
--
-- The operator writes kstatus conditions (Ready, Reconciling, Stalled) plus Paused and
-- RolledBack; this script maps them, in this order (the first match wins):
--
--   no status yet                                  Progressing
--   Stalled=True (for the current generation)      Degraded     failed or timed-out checkpoint,
--                                                               blockers, SpecChanged,
--                                                               NamespaceClaimed, an invalid
--                                                               spec, a permanent error
--   status.observedGeneration missing or older
--   than metadata.generation                       Progressing  stale status never reads Healthy
--   Ready=True                                     Healthy      every namespace migrated
--   RolledBack=True, requested by the
--   meshmig.io/rollback annotation                 Suspended    the user stopped it on purpose
--   RolledBack=True, otherwise (onFailure)         Degraded     a checkpoint failed and the
--                                                               operator undid the migration
--   Reconciling=True                               Progressing  steps or a rollback are running
--   Paused=True                                    Suspended    meshmig.io/paused, or a step of
--                                                               spec.pauseBefore waits for
--                                                               meshmig.io/approve
--   anything else                                  Progressing
--
-- The message is the message of the condition that decided. Written for Argo CD's Lua 5.1
-- interpreter (gopher-lua) and tested with Lua 5.4 by crates/operator/tests/gitops_health.rs
-- against testdata/ (expectations in health_test.yaml, Argo CD's format).

local function find_condition(conditions, type_)
  if conditions == nil then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.type == type_ then
      return c
    end
  end
  return nil
end

local function is_true(c)
  return c ~= nil and c.status == "True"
end

local function message_of(c, fallback)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return c.message
  end
  return fallback
end

local hs = {}

if obj.status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the meshmig operator to report status"
  return hs
end

local generation = 0
if obj.metadata ~= nil and obj.metadata.generation ~= nil then
  generation = obj.metadata.generation
end
local conditions = obj.status.conditions
local stalled = find_condition(conditions, "Stalled")
local ready = find_condition(conditions, "Ready")
local reconciling = find_condition(conditions, "Reconciling")
local paused = find_condition(conditions, "Paused")
local rolled_back = find_condition(conditions, "RolledBack")

-- A failing reconcile sets Stalled for the current generation without moving
-- status.observedGeneration, so a Stalled condition counts when either is current.
local observed = obj.status.observedGeneration
local status_current = observed ~= nil and observed >= generation
local stalled_current = is_true(stalled)
  and (status_current or (stalled.observedGeneration ~= nil and stalled.observedGeneration >= generation))

if stalled_current then
  hs.status = "Degraded"
  hs.message = message_of(stalled, "Stalled")
  return hs
end

if not status_current then
  hs.status = "Progressing"
  hs.message = "Waiting for the meshmig operator to observe generation " .. tostring(generation)
  if observed ~= nil then
    hs.message = hs.message .. " (status describes generation " .. tostring(observed) .. ")"
  end
  -- A failing reconcile that will be retried reports its error in Reconciling.
  if is_true(reconciling) and reconciling.observedGeneration ~= nil
    and reconciling.observedGeneration >= generation and reconciling.message ~= nil then
    hs.message = hs.message .. ": " .. reconciling.message
  end
  return hs
end

if is_true(ready) then
  hs.status = "Healthy"
  hs.message = message_of(ready, "Ready")
  return hs
end

if is_true(rolled_back) then
  local requested_by = nil
  local target = 1
  if obj.status.rollback ~= nil then
    requested_by = obj.status.rollback.requestedBy
    if obj.status.rollback.target ~= nil then
      target = obj.status.rollback.target
    end
  end
  if requested_by == "annotation" then
    hs.status = "Suspended"
  else
    hs.status = "Degraded"
  end
  hs.message = message_of(rolled_back, "RolledBack")
  if requested_by == "annotation" and target > 1 then
    hs.message = hs.message .. "; remove the meshmig.io/rollback annotation to resume"
  else
    hs.message = hs.message .. "; delete and re-create the MeshMigration to migrate again"
  end
  return hs
end

if is_true(reconciling) then
  hs.status = "Progressing"
  hs.message = message_of(reconciling, "Reconciling")
  local rollback = obj.status.rollback
  if rollback ~= nil and rollback.completed ~= true and rollback.target ~= nil then
    hs.message = "Rolling back to before step " .. tostring(rollback.target)
      .. " (" .. tostring(rollback.requestedBy) .. "): " .. hs.message
  end
  return hs
end

if is_true(paused) then
  hs.status = "Suspended"
  hs.message = message_of(paused, "Paused")
  return hs
end

hs.status = "Progressing"
hs.message = message_of(ready, "Waiting for the meshmig operator")
return hs
