# Static twins of imported shared libraries, chosen per program.
#
# A layer library links its dependencies through snapledger_dependency(<name> <target>), an
# INTERFACE target that resolves to <target> (shared, as Debian installs it) for every program,
# except a program that sets the target property SNAPLEDGER_STATIC_DEPS to ON: there it resolves
# to a static twin of <target> (its .a archive beside the .so, with its own dependencies twinned
# the same way, so CMake orders the archives itself). That lets snapledger-receive, started by
# sshd once per SSH session, link its few libraries statically while every other program shares
# one copy of abseil with gRPC.

# snapledger_static_twin(<imported target> <out var>): defines the imported target
# snapledger_static_<target, with :: as __> (once) and sets <out var> to its name, or to <target>
# itself when it has no static archive (with a warning: a program asking for static libraries
# then gets that one shared).
function(snapledger_static_twin target out)
  string(REPLACE "::" "__" twin_id "${target}")
  set(twin "snapledger_static_${twin_id}")
  if(TARGET ${twin})
    set(${out} ${twin} PARENT_SCOPE)
    return()
  endif()
  get_target_property(type ${target} TYPE)
  get_target_property(deps ${target} INTERFACE_LINK_LIBRARIES)
  set(twin_deps)
  if(deps)
    foreach(dep IN LISTS deps)
      if(TARGET ${dep})
        snapledger_static_twin(${dep} dep_twin)
        list(APPEND twin_deps ${dep_twin})
      elseif(dep MATCHES "\\.so(\\.[0-9.]+)?$")
        string(REGEX REPLACE "\\.so(\\.[0-9.]+)?$" ".a" dep_archive "${dep}")
        if(EXISTS "${dep_archive}")
          list(APPEND twin_deps "${dep_archive}")
        else()
          list(APPEND twin_deps "${dep}")
        endif()
      else()
        list(APPEND twin_deps ${dep})
      endif()
    endforeach()
  endif()
  get_target_property(includes ${target} INTERFACE_INCLUDE_DIRECTORIES)
  if(type STREQUAL "INTERFACE_LIBRARY")
    add_library(${twin} INTERFACE IMPORTED)
  else()
    set(location)
    foreach(prop IMPORTED_LOCATION_NONE IMPORTED_LOCATION_RELEASE IMPORTED_LOCATION_RELWITHDEBINFO
                 IMPORTED_LOCATION)
      get_target_property(location ${target} ${prop})
      if(location)
        break()
      endif()
    endforeach()
    string(REGEX REPLACE "\\.so(\\.[0-9.]+)?$" ".a" archive "${location}")
    if(NOT location OR NOT EXISTS "${archive}")
      message(WARNING "${target}: no static archive beside '${location}'; programs that set "
                      "SNAPLEDGER_STATIC_DEPS link it shared")
      set(${out} ${target} PARENT_SCOPE)
      return()
    endif()
    add_library(${twin} STATIC IMPORTED)
    set_target_properties(${twin} PROPERTIES IMPORTED_LOCATION "${archive}")
  endif()
  if(includes)
    set_target_properties(${twin} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${includes}")
  endif()
  set_target_properties(${twin} PROPERTIES INTERFACE_LINK_LIBRARIES "${twin_deps}")
  set(${out} ${twin} PARENT_SCOPE)
endfunction()

# snapledger_dependency(<name> <imported target>...): the INTERFACE target snapledger_dep_<name>
# that layer libraries link instead of the targets themselves (see the top of this file).
function(snapledger_dependency name)
  add_library(snapledger_dep_${name} INTERFACE)
  set(static_wanted "$<BOOL:$<TARGET_PROPERTY:SNAPLEDGER_STATIC_DEPS>>")
  foreach(t IN ITEMS ${ARGN})
    snapledger_static_twin(${t} t_twin)
    target_link_libraries(snapledger_dep_${name} INTERFACE
      "$<${static_wanted}:${t_twin}>" "$<$<NOT:${static_wanted}>:${t}>")
  endforeach()
endfunction()
