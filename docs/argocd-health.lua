-- Argo CD health check for fal.ai/FalApp (resource.customizations.health.fal.ai_FalApp).
-- Same rules as kstatus (Flux, Helm 4), in the same order:
--   spec change not yet observed (status.observedGeneration < metadata.generation) -> Progressing
--   Stalled=True (e.g. InvalidSpec: an unknown machine type)                        -> Degraded
--   Ready=True                                                                       -> Healthy
--   anything else (placing replicas, falling back, no capacity yet)                  -> Progressing,
--   with the Ready condition's message, e.g. "1/2 replicas ready".
-- Lua 5.1, as Argo CD runs it (gopher-lua).
local hs = {status = "Progressing", message = "Waiting for the falapp-operator to report status"}

if obj.metadata ~= nil and obj.metadata.deletionTimestamp ~= nil then
  hs.message = "Deleting"
  return hs
end
if obj.status == nil or obj.status.conditions == nil then
  return hs
end

local generation = obj.metadata and obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and observed ~= nil and observed ~= generation then
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation) ..
    " (observed " .. tostring(observed) .. ")"
  return hs
end

local ready = nil
for _, condition in ipairs(obj.status.conditions) do
  if condition.type == "Stalled" and condition.status == "True" then
    hs.status = "Degraded"
    hs.message = (condition.reason or "Stalled") .. ": " .. (condition.message or "")
    return hs
  end
  if condition.type == "Ready" then
    ready = condition
  end
end

if ready ~= nil then
  local message = ready.message or ""
  if ready.reason ~= nil and ready.reason ~= "" then
    message = ready.reason .. ": " .. message
  end
  hs.message = message
  if ready.status == "True" then
    hs.status = "Healthy"
    if obj.status.machines ~= nil and obj.status.machines ~= "" then
      hs.message = message .. " (" .. obj.status.machines .. ")"
    end
  end
end
return hs
