-- Argo CD health check for djangoops.dev/DjangoMigration, the value of the argocd-cm key
-- resource.customizations.health.djangoops.dev_DjangoMigration (see docs/argocd.md). Argo CD runs it with
-- Lua 5.1 (gopher-lua) and `obj` set to the live object. tests/packaging/test_argocd_health.py runs it against
-- statuses saved from real runs.
--
--   no status yet                  Progressing  (the operator has not picked the run up)
--   Succeeded                      Healthy
--   Failed                         Degraded     with the run's message: what failed, where the app and data are
--   AwaitingApproval               Suspended    until spec.approval is set to Automatic
--   any other phase                Progressing  with the phase and the run's message
--
-- Any other phase includes phases a newer operator may add: as a PreSync hook, Unknown would fail the sync
-- while the run goes on, so only Failed is ever reported as a failure.
local hs = {}
local status = obj.status
if status == nil or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to start the run"
  return hs
end

local phase = status.phase
local message = status.message
if message == nil or message == "" then
  message = phase
end

if phase == "Succeeded" then
  hs.status = "Healthy"
  hs.message = message
elseif phase == "Failed" then
  hs.status = "Degraded"
  hs.message = message
elseif phase == "AwaitingApproval" and (obj.spec == nil or obj.spec.approval ~= "Automatic") then
  hs.status = "Suspended"
  hs.message = message
elseif phase == "AwaitingApproval" then
  -- Approved (in Git or with kubectl) but not yet seen by the operator: it goes on at its next look.
  hs.status = "Progressing"
  hs.message = "Approved; the run goes on"
else
  hs.status = "Progressing"
  hs.message = phase .. ": " .. message
end
return hs
